"""Audio SNIPS loader and the character + slot-marker vocabulary SUPERB's slot filling uses.

``SNIPS/all.iob.snips.txt`` lines: ``<uttid> BOS w1 … wn EOS O t1 … tn <intent>`` (a tab or spaces before the tag
part), where a tag is ``O`` or a slot type (SUPERB's file uses bare types; ``B-type``/``I-type`` are accepted too).
Audio: ``SNIPS/{train,valid,test}/<uttid>.wav``; ``<uttid>`` starts with the TTS speaker, so the folders split by
speaker. ``slots.txt`` lists slot types.

A transcript becomes SUPERB's target string: characters with ``B-<type>``/``E-<type>`` markers around each slot
value, e.g. ``"ADD B-music_item THIS TRACK E-music_item TO MY PLAYLIST"``; each marker is one token.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from common import datasets
from common.audio import audio_duration
from tasks.base import DatasetNotFoundError, Utterance
from tasks.listfile import ListFileError, read_fields

SNIPS_DIR = datasets.SNIPS
SPLIT_DIRS = {"train": "train", "dev": "valid", "test": "test"}
_PUNCTUATION = set("?!.,;-–…")
# Accented letters folded to ASCII and '"' to a space, as SUPERB's SNIPS preparation does.
_FOLD = str.maketrans('ÁÃÄÅÆÇÈÉÊËÍÏÐÒÓÔÖØÚÛĘŃŌŞŪ"', "AAAAACEEEEIIDOOOOOUUENOSU ")


@dataclass(frozen=True)
class SlotSentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]  # one per word: "O" or a slot type (B-/I- prefixes kept for span boundaries)
    intent: str


def parse_iob_file(path: Path) -> dict[str, SlotSentence]:
    """Utterance id → its words and tags; a malformed line raises an error naming the file and line."""
    out = {}
    for lineno, fields, raw in read_fields(path, 6, None, "'<uttid> BOS words… EOS O tags… <intent>'"):
        uttid = fields[0]
        if fields[1] != "BOS" or "EOS" not in fields:
            raise ListFileError(path, lineno, "expected '<uttid> BOS <words> EOS O <tags> <intent>'", raw)
        eos = fields.index("EOS")
        words, rest = fields[2:eos], fields[eos + 1:]
        if len(rest) != len(words) + 2:
            raise ListFileError(path, lineno, f"{len(words)} words but {len(rest) - 2} tags "
                                "(expected one tag per word between 'O' and the intent)", raw)
        out[uttid] = SlotSentence(tuple(words), tuple(rest[1:-1]), rest[-1])
    return out


def read_slot_types(path: Path) -> list[str]:
    """Slot types from ``slots.txt`` (one per line; ``O`` and B-/I- prefixes ignored), sorted."""
    types = {_bare(fields[0]) for _, fields, _ in read_fields(path, 1, 1, "one slot type per line")}
    types.discard("O")
    return sorted(types)


def _bare(tag: str) -> str:
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def target_string(sentence: SlotSentence) -> str:
    """SUPERB's target text: normalised words with ``B-type``/``E-type`` around each slot value."""
    kept = []
    for word, tag in zip(sentence.words, sentence.tags):
        word = word.upper().translate(_FOLD).replace("&", "AND").strip()
        if word and word not in _PUNCTUATION:
            kept.append((" ".join(word.split()), tag))
    pieces = []
    for i, (word, tag) in enumerate(kept):
        prev = kept[i - 1][1] if i > 0 else "O"
        nxt = kept[i + 1][1] if i + 1 < len(kept) else "O"
        starts = tag != "O" and (tag.startswith("B-") or _bare(prev) != _bare(tag) or prev == "O")
        ends = tag != "O" and (nxt == "O" or nxt.startswith("B-") or _bare(nxt) != _bare(tag))
        pieces.append((f"B-{_bare(tag)} " if starts else "") + word + (f" E-{_bare(tag)}" if ends else ""))
    return " ".join(pieces)


# s3prl's character-slot tokenizer (downstream/ctc/text.py:95-104): <pad> (the CTC blank), <eos>, <unk>, then
# downstream/ctc/vocab/character.txt (space, A-Z, apostrophe), then B-/E- per slot type: SUPERB's output size.
CHARACTERS = [" "] + [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["'"]
EOS, UNK = "<eos>", "<unk>"


class SlotVocabulary:
    """Token ids as s3prl's ``CharacterTextSlotEncoder``: 0 = CTC blank, ``<eos>``, ``<unk>``, the 28 characters,
    then one ``B-type`` and one ``E-type`` token per slot type. A character outside the 28 encodes as ``<unk>``
    (s3prl ``vocab_to_idx``) and decodes as the text ``<unk>``, on references and hypotheses alike."""

    def __init__(self, slot_types: list[str]):
        self.tokens = ["<blank>", EOS, UNK, *CHARACTERS] + [f"{m}-{t}" for t in slot_types for m in ("B", "E")]
        self.index = {tok: i for i, tok in enumerate(self.tokens)}
        self.slot_types = slot_types
        self.eos = self.index[EOS]

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Ids of a target string (markers are whole words of the string), as s3prl's encoder gives them
        (``downstream/ctc/text.py:106-126``): a marker sits right next to its value's characters (no space token
        between), words are separated by one space token, and ``<eos>`` ends the target."""
        ids: list[int] = []
        for word in text.split(" "):
            if word[:2] == "E-" and word in self.index:  # closes the value it follows, no space between
                ids.append(self.index[word])
                continue
            if ids and self.tokens[ids[-1]][:2] != "B-":  # a space between words, none after an opening marker
                ids.append(self.index[" "])
            if word[:2] == "B-" and word in self.index:
                ids.append(self.index[word])
            else:
                ids.extend(self.index.get(ch, self.index[UNK]) for ch in word)
        return ids + [self.eos]

    def decode(self, ids: list[int]) -> str:
        """Inverse of :meth:`encode` (markers become words again; ``<eos>`` is dropped)."""
        out = []
        for i in ids:
            if i == self.eos:
                continue
            tok = self.tokens[i]
            out.append(tok if tok[:2] not in ("B-", "E-") else (f"{tok} " if tok.startswith("B-") else f" {tok}"))
        return " ".join("".join(out).split())


def load_snips(data_root: str | Path) -> tuple[dict[str, SlotSentence], SlotVocabulary]:
    """All sentences and the vocabulary (characters of every transcript, slot types of ``slots.txt``)."""
    root = Path(data_root) / SNIPS_DIR
    iob, slots = root / "all.iob.snips.txt", root / "slots.txt"
    for f in (iob, slots):
        if not f.is_file():
            raise DatasetNotFoundError(f"Audio SNIPS file {f} not found (see docs/DATA_LAYOUTS.md, SF)")
    sentences = parse_iob_file(iob)
    slot_types = read_slot_types(slots)
    for uttid, s in sentences.items():
        unknown = {_bare(t) for t in s.tags} - set(slot_types) - {"O"}
        if unknown:
            raise ValueError(f"{iob}: utterance {uttid} uses slot type(s) {sorted(unknown)} missing from {slots}")
    return sentences, SlotVocabulary(slot_types)


def load_split(data_root: str | Path, split: str, sentences: dict[str, SlotSentence],
               vocab: SlotVocabulary, dropped: list[Path] | None = None,
               voices: Sequence[str] | None = None) -> list[Utterance]:
    """Utterances of ``split`` (train/dev/test → folders train/valid/test) that have a transcript and, when
    ``voices`` is given, whose speaker (the id before its first ``-``) is one of them, as s3prl filters each split
    to its speaker list (``downstream/ctc/snips.yaml:49-99``). Audio files without a transcript are appended to
    ``dropped`` when given. Raises DatasetNotFoundError when the folder is missing or nothing is left."""
    folder = Path(data_root) / SNIPS_DIR / SPLIT_DIRS[split]
    if not folder.is_dir():
        raise DatasetNotFoundError(f"Audio SNIPS folder {folder} not found")
    utts = []
    wavs = sorted(folder.glob("*.wav"))
    if voices is not None:
        wavs = [w for w in wavs if w.stem.split("-")[0] in set(voices)]
        if not wavs:
            raise DatasetNotFoundError(f"no .wav file of the voices {', '.join(voices)} in {folder} (SUPERB's "
                                       f"{split} voices; others: -o data.{split}_voices=[...])")
    for wav in wavs:
        if wav.stem not in sentences:
            if dropped is not None:
                dropped.append(wav)
            continue  # audio without a transcript line (s3prl skips these too)
        ids = vocab.encode(target_string(sentences[wav.stem]))
        # the reference is the decoded target, as s3prl scores it (an unknown character reads "<unk>")
        utts.append(Utterance(id=wav.stem, path=wav, duration=audio_duration(wav),
                              speaker=wav.stem.split("-")[0], label=tuple(ids), transcript=vocab.decode(ids)))
    if not utts:
        raise DatasetNotFoundError(f"no transcribed .wav files in {folder}")
    return utts
