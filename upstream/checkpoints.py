"""Load upstreams from checkpoint files/dirs in four formats, save our own, export to transformers.

Recognised by :func:`load_upstream_from_path`, tried in this order:
  (d) ours: a dir with ``upstream.yaml`` (type tag, version, config, weights checksum) + ``model.safetensors``;
  (a) a Hugging Face model dir: ``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``;
  (c) an s3prl distiller ``.ckpt`` (a torch pickle with ``Distiller`` weights and ``Config``);
  (b) a fairseq HuBERT ``.pt`` (a torch pickle with ``model`` weights and ``cfg`` or ``args``).
Every pickle is read with ``torch.load(..., weights_only=True)``; plain types (argparse.Namespace, numpy scalars)
are allow-listed, and known plain-data classes of other libraries (fairseq's ``Dictionary``, pickled in the
``task_state`` of every released HuBERT ``.pt``) are read into inert stand-ins (:class:`ForeignRecord`) under their
own qualified names, so those files load without fairseq and without running anything they hold. Anything else
needs the explicit ``trust_pickle=True`` (CLI: ``--trust-pickle``) and is otherwise refused by name.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
import yaml

from common.config import from_dict, to_dict
from common.audio import SAMPLE_RATE
from common.io import atomic_dir, atomic_write_bytes, atomic_write_text

from .base import Upstream
from .convert import (ConversionError, config_from_fairseq, config_from_hf, config_from_s3prl, config_to_hf,
                      state_from_fairseq, state_from_hf, state_to_hf)
from .hubert import HubertConfig, HubertModel, HubertUpstream

log = logging.getLogger(__name__)

FORMAT_NAME = "distilsuperb-upstream"
FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE = "upstream.yaml", "model.safetensors"

# Plain data types some legacy checkpoints pickle; none of them runs code when unpickled.
SAFE_GLOBALS: list[Any] = [argparse.Namespace, np.dtype, np._core.multiarray.scalar]
SAFE_GLOBALS += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]




class ForeignRecord:
    """Inert stand-in for a plain-data class of another library found in a checkpoint (see ``FOREIGN_RECORDS``).

    torch's weights-only unpickler creates it with ``__new__`` (no arguments) and hands it the pickled attribute
    dict, which it keeps as ``state`` (already unpickled by the same safe loader, so only allow-listed values);
    it has no other behaviour, so nothing in the file runs. Calling it with arguments (a pickle ``REDUCE``) fails.
    """

    foreign_name = ""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:  # (dict, no slots) form
            state = state[0]
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.foreign_name}: expected a dict of attributes, got "
                                         f"{type(state).__name__}")
        self.state = state

    def __repr__(self) -> str:
        return f"<inert {self.foreign_name}>"


def _record(qualified_name: str) -> type[ForeignRecord]:
    return type(qualified_name.rsplit(".", 1)[-1], (ForeignRecord,), {"foreign_name": qualified_name})


# Foreign classes that hold plain data only and that real checkpoints carry beside the weights. We never need their
# content (fairseq's label dictionaries: symbols, counts, indices), only that the file loads.
FOREIGN_RECORDS: dict[str, type[ForeignRecord]] = {
    name: _record(name) for name in ("fairseq.data.dictionary.Dictionary",)}


class UnsafeCheckpointError(pickle.UnpicklingError, ValueError):
    """A pickle needs globals outside the allow-list; loading it could run arbitrary code. A ValueError too: it is
    the user's file, so the command-line tools report it in one line (exit code 2)."""


# ---- safe reading -------------------------------------------------------------------------------------------------

def safe_torch_load(path: Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True``, the plain-type allow-list and the inert foreign records, on CPU.

    Raises :class:`UnsafeCheckpointError` (one line naming the file and the globals) for a pickle that needs
    anything else, and :class:`ConversionError` for a file torch cannot read at all (truncated, not a
    checkpoint). Only ``trust_pickle=True`` (for files you trust) falls back to a full unpickle.
    """
    if trust_pickle:
        try:  # the safe loader first: a file it reads (a fairseq .pt) needs no full unpickle and no fairseq
            return safe_torch_load(path)
        except UnsafeCheckpointError:
            pass
        log.warning("%s: full unpickle (trust_pickle=True): this can run code stored in the file", path)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except ModuleNotFoundError as e:
            raise ConversionError(f"{path}: the full unpickle needs the module {e.name!r}, which is not "
                                  "installed") from None
        except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as e:
            raise ConversionError(f"{path}: not a readable torch checkpoint ({_first_line(e)})") from None
    allowed = SAFE_GLOBALS + [(cls, name) for name, cls in FOREIGN_RECORDS.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names = _unsafe_globals(path, e)
        if names is None:
            raise ConversionError(f"{path}: not a readable torch checkpoint ({_first_line(e)})") from None
        raise UnsafeCheckpointError(
            f"{path}: refusing to unpickle: it needs globals outside the safe allow-list ({names}); loading it "
            "could execute code stored in the file. If you trust its source, pass --trust-pickle "
            "(Python: trust_pickle=True).") from None
    except Exception as e:  # noqa: BLE001 — junk bytes fail anywhere in the unpickler (KeyError, RuntimeError,
        # EOFError, ValueError, TypeError, safetensors' error for a .safetensors name): all mean "not a checkpoint"
        raise ConversionError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {_first_line(e)})") \
            from None


def _safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file's bytes; a truncated or corrupt file is a :class:`ConversionError` naming it."""
    try:
        return safetensors.torch.load(data)
    except Exception as e:  # safetensors' SafetensorError (a Rust error type) for a bad header or short file
        raise ConversionError(f"{path}: not a readable safetensors file ({_first_line(e)}; truncated or "
                              "corrupt?)") from None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _unsafe_globals(path: Path, error: pickle.UnpicklingError) -> str | None:
    """The globals a refused pickle needs, or None when the refusal was not about globals (a corrupt file)."""
    try:
        names = [n for n in torch.serialization.get_unsafe_globals_in_checkpoint(path) if n not in FOREIGN_RECORDS]
        if names:
            return ", ".join(names)
    except Exception:  # not a zip checkpoint: torch's message names the first offending global or opcode
        pass
    text = str(error)
    operand = re.search(r"Unsupported operand (\d+)", text)
    if operand:  # a real pickle opcode the safe loader does not run (INST, OBJ, ...), or a byte of garbage
        return operand.group(0) if chr(int(operand.group(1))) in _PICKLE_OPCODES else None
    for marker in ("Unsupported global", "Can only", "Trying to call reduce", "Unsupported class"):
        hit = next((line.strip() for line in text.splitlines() if marker in line), None)
        if hit:
            return hit
    return None


_PICKLE_OPCODES = {op.code for op in pickletools.opcodes}


def _read_weights(path: Path, trust_pickle: bool) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return _safetensors(path.read_bytes(), path)
    state = safe_torch_load(path, trust_pickle)
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_model_state(model: HubertModel, state: dict[str, torch.Tensor], where: str,
                     optional: tuple[str, ...] = ("mask_emb",)) -> None:
    """Strict load: every model weight must come from ``state`` (except ``optional``), nothing may be left over."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state and k not in optional)
    unexpected = sorted(k for k in state if k not in own)
    if missing or unexpected:
        raise ConversionError(f"{where}: weights do not match the architecture; missing {missing[:8]}"
                              f"{' …' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                              f"{' …' if len(unexpected) > 8 else ''}")
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
    if bad:
        raise ConversionError(f"{where}: shape mismatch: {bad[:5]}")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)


# ---- the four formats ---------------------------------------------------------------------------------------------

def _load_ours(path: Path, **kwargs) -> Upstream:
    meta = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8-sig"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or meta.get("type") not in (
            "hubert", "transformers"):
        raise ConversionError(f"{path / CONFIG_FILE}: not a {FORMAT_NAME} file of type 'hubert' or 'transformers'")
    if meta.get("version") != FORMAT_VERSION:
        raise ConversionError(f"{path / CONFIG_FILE}: version {meta.get('version')} (this code reads "
                              f"{FORMAT_VERSION})")
    weights = path / WEIGHTS_FILE
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("weights_sha256"):
        raise ConversionError(f"{weights}: checksum differs from {CONFIG_FILE} (incomplete or mixed save)")
    normalize = meta.get("normalize_waveform", False)
    if not isinstance(normalize, bool):
        raise ConversionError(f"{path / CONFIG_FILE}: normalize_waveform is {normalize!r}, expected true or false")
    if meta["type"] == "transformers":  # a wavlm / data2vec-audio upstream (e.g. fine-tuned): transformers' config
        from .hf_families import transformers_upstream_from_state

        return transformers_upstream_from_state(meta.get("model_type"), meta["config"], _safetensors(data, weights),
                                                str(weights), normalize_waveform=normalize)
    model = HubertModel(from_dict(HubertConfig, meta["config"], where=f"{path / CONFIG_FILE}:config"))
    load_model_state(model, _safetensors(data, weights), str(weights), optional=())
    first_state = meta.get("first_state", "encoder_input")
    if first_state not in ("encoder_input", "projection"):
        raise ConversionError(f"{path / CONFIG_FILE}: first_state is {first_state!r}, expected encoder_input or "
                              "projection")
    return HubertUpstream(model, include_pred_heads=kwargs.get("include_pred_heads",
                                                               meta.get("include_pred_heads", False)),
                          normalize_waveform=normalize, first_state=kwargs.get("first_state", first_state))


def _upstream_from_state(cfg: HubertConfig, state: dict[str, torch.Tensor], path: Path, **kwargs) -> HubertUpstream:
    """A HuBERT-family upstream of ``cfg`` holding ``state`` (converted weights read from ``path``)."""
    model = HubertModel(cfg)
    load_model_state(model, state, str(path))
    return HubertUpstream(model, **kwargs)


def hf_do_normalize(path: Path) -> bool:
    """``do_normalize`` of an HF dir's ``preprocessor_config.json`` (the feature extractor that prepared the
    model's pretraining audio); False when the dir has none (transformers' raw ``from_pretrained`` models, ours).
    Raises ConversionError when the file is unreadable or the value is not a boolean."""
    file = path / "preprocessor_config.json"
    if not file.is_file():
        return False
    try:
        value = json.loads(file.read_text(encoding="utf-8-sig")).get("do_normalize", False)
    except (json.JSONDecodeError, AttributeError) as e:
        raise ConversionError(f"{file}: not a JSON object ({_first_line(e)})") from None
    if not isinstance(value, bool):
        raise ConversionError(f"{file}: do_normalize is {value!r}, expected true or false")
    return value


def fairseq_normalize(ckpt: dict) -> bool:
    """fairseq's ``task.normalize`` (``cfg.task`` in hydra checkpoints, ``args.normalize`` in older ones): whether
    the model was pretrained on layer-normed waveforms (HuBERT Large, wav2vec2 Large LV-60 / XLSR)."""
    if ckpt.get("cfg") is not None:
        task = ckpt["cfg"].get("task") if isinstance(ckpt["cfg"], dict) else None
        value = task.get("normalize", False) if isinstance(task, dict) else False
    else:
        args = vars(ckpt["args"]) if isinstance(ckpt["args"], argparse.Namespace) else ckpt["args"]
        value = args.get("normalize", False) if isinstance(args, dict) else False
    return bool(value)


def _load_hf(path: Path, trust_pickle: bool = False, **kwargs) -> Upstream:
    hf_config = json.loads((path / "config.json").read_text(encoding="utf-8-sig"))  # a BOM from an editor
    from .hf_families import TRANSFORMERS_FAMILIES, load_transformers_upstream

    kwargs.setdefault("normalize_waveform", hf_do_normalize(path))

    if isinstance(hf_config, dict) and hf_config.get("model_type") in TRANSFORMERS_FAMILIES:
        kwargs.pop("include_pred_heads", None)
        return load_transformers_upstream(path, hf_config["model_type"], **kwargs)
    cfg = config_from_hf(hf_config, str(path / "config.json"))  # hubert, wav2vec2; names the supported families
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            state = state_from_hf(_read_weights(path / name, trust_pickle))
            break
    else:
        raise ConversionError(f"{path}: config.json but neither model.safetensors nor pytorch_model.bin")
    return _upstream_from_state(cfg, state, path, **kwargs)


def _load_s3prl(path: Path, ckpt: dict, **kwargs) -> HubertUpstream:
    config = ckpt["Config"]
    if not isinstance(config, dict) or not isinstance(config.get("distiller"), dict):
        raise ConversionError(f"{path}: Config['distiller'] missing; not an s3prl distiller checkpoint")
    cfg = config_from_s3prl(config["distiller"], f"{path}:Config.distiller")
    state, ignored = state_from_fairseq(ckpt["Distiller"], cfg)
    if ignored:
        raise ConversionError(f"{path}: unrecognised distiller weights {ignored[:8]}")
    # s3prl reports the distiller's states as [projection before the positional conv] + layers + prediction heads
    # (upstream/distiller/expert.py:53,57): SUPERB's DistilHuBERT numbers were computed on these
    kwargs.setdefault("include_pred_heads", True)
    kwargs.setdefault("first_state", "projection")
    return _upstream_from_state(cfg, state, path, **kwargs)


def _load_fairseq(path: Path, ckpt: dict, **kwargs) -> HubertUpstream:
    if ckpt.get("cfg") is not None:
        model_cfg = ckpt["cfg"]["model"] if "model" in ckpt["cfg"] else ckpt["cfg"]
    else:
        model_cfg = vars(ckpt["args"]) if isinstance(ckpt["args"], argparse.Namespace) else ckpt["args"]
    if not isinstance(model_cfg, dict):
        raise ConversionError(f"{path}: fairseq cfg is a {type(model_cfg).__name__}, expected a dict")
    name = model_cfg.get("_name", model_cfg.get("arch", "hubert"))
    if "hubert" not in str(name):
        raise ConversionError(f"{path}: fairseq model {name!r} is not a HuBERT")
    cfg = config_from_fairseq(model_cfg, ckpt["model"], str(path))
    state, ignored = state_from_fairseq(ckpt["model"], cfg)
    if ignored:
        log.info("%s: ignoring fairseq weights outside the encoder: %s", path, ignored)
    kwargs.setdefault("normalize_waveform", fairseq_normalize(ckpt))
    return _upstream_from_state(cfg, state, path, **kwargs)


def load_upstream_from_path(path: str | Path, trust_pickle: bool = False, **kwargs) -> Upstream:
    """Build an upstream from a checkpoint file or dir in any supported format (see the module docstring).

    kwargs go to the upstream (e.g. ``include_pred_heads=True``).
    """
    path = Path(path)
    tried = [f"ours ({CONFIG_FILE} + {WEIGHTS_FILE} in a dir)",
             "Hugging Face (config.json + model.safetensors or pytorch_model.bin in a dir)"]
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return _load_ours(path, **kwargs)
        if (path / "config.json").is_file():
            return _load_hf(path, trust_pickle, **kwargs)
    elif path.suffix == ".safetensors":  # weights without the architecture (torch.load would misread it)
        raise ConversionError(f"{path}: a lone .safetensors file holds weights but not the architecture; pass the "
                              f"folder that holds it with {CONFIG_FILE} (ours) or config.json (Hugging Face)")
    elif path.is_file():
        ckpt = safe_torch_load(path, trust_pickle)
        if isinstance(ckpt, dict) and "Distiller" in ckpt and "Config" in ckpt:
            return _load_s3prl(path, ckpt, **kwargs)
        if isinstance(ckpt, dict) and "model" in ckpt and ("cfg" in ckpt or "args" in ckpt):
            return _load_fairseq(path, ckpt, **kwargs)
    tried += ["s3prl distiller .ckpt (torch pickle with 'Distiller' and 'Config')",
              "fairseq HuBERT .pt (torch pickle with 'model' and 'cfg' or 'args')"]
    raise ConversionError(f"{path}: unrecognised upstream checkpoint. Tried: " + "; ".join(tried))


# ---- writing ------------------------------------------------------------------------------------------------------

def _as_model(upstream_or_model: HubertUpstream | HubertModel) -> tuple[HubertModel, bool]:
    from .hf_families import TransformersUpstream

    if isinstance(upstream_or_model, TransformersUpstream):
        raise ConversionError(f"{upstream_or_model.model_type} upstreams have no HuBERT encoder to convert; "
                              "save_upstream keeps them in transformers' layout")
    if isinstance(upstream_or_model, HubertUpstream):
        return upstream_or_model.model, upstream_or_model.include_pred_heads
    if isinstance(upstream_or_model, HubertModel):
        return upstream_or_model, False
    raise TypeError(f"expected a HubertUpstream or HubertModel, got {type(upstream_or_model).__name__}")


def save_upstream(upstream_or_model: HubertUpstream | HubertModel, directory: str | Path) -> Path:
    """Write our format into ``directory``: ``model.safetensors``, then ``upstream.yaml`` with its checksum.

    Each file is written atomically; the checksum makes a save interrupted between the two files fail loudly on
    load instead of pairing new weights with an old config.
    """
    from .hf_families import TransformersUpstream

    directory = Path(directory)
    if isinstance(upstream_or_model, TransformersUpstream):  # wavlm / data2vec-audio: transformers' own layout
        hf_model = upstream_or_model.model
        state = {k: v.detach().float().cpu().contiguous() for k, v in hf_model.state_dict().items()}
        config = {k: v for k, v in hf_model.config.to_dict().items()
                  if k not in ("transformers_version", "_name_or_path", "dtype", "torch_dtype")}
        extra = {"type": "transformers", "model_type": upstream_or_model.model_type, "config": config}
    else:
        model, include_pred_heads = _as_model(upstream_or_model)
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        extra = {"type": "hubert", "include_pred_heads": include_pred_heads, "config": to_dict(model.cfg)}
        if getattr(upstream_or_model, "first_state", "encoder_input") != "encoder_input":
            extra["first_state"] = upstream_or_model.first_state
    if getattr(upstream_or_model, "normalize_waveform", False):  # written only when on: older files stay valid
        extra["normalize_waveform"] = True
    data = safetensors.torch.save(state)
    atomic_write_bytes(directory / WEIGHTS_FILE, data)
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "type": extra.pop("type"),
            "weights_sha256": hashlib.sha256(data).hexdigest(), **extra}
    atomic_write_text(directory / CONFIG_FILE, yaml.safe_dump(meta, sort_keys=False))
    return directory


def export_hf(upstream_or_model: HubertUpstream | HubertModel, directory: str | Path) -> Path:
    """Write a transformers ``HubertModel`` dir (config.json + model.safetensors) holding our encoder weights.

    Prediction and codeword heads are not part of transformers' HubertModel and are left out. An upstream that
    normalises its waveforms also gets a ``preprocessor_config.json`` with ``do_normalize: true`` (how transformers
    and s3prl know). The dir is built beside the target and renamed into place, so a failed export leaves no
    half-written dir.
    """
    import transformers

    model, _ = _as_model(upstream_or_model)
    hf_model = transformers.HubertModel(transformers.HubertConfig(**config_to_hf(model.cfg)))
    _load_exact(hf_model, state_to_hf(model.state_dict()), "export_hf")
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        if getattr(upstream_or_model, "normalize_waveform", False):
            transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                                  do_normalize=True, return_attention_mask=True).save_pretrained(tmp)
    return directory


def _load_exact(hf_model: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into a transformers model; any missing or unexpected key is a :class:`ConversionError`."""
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConversionError(f"{what}: key mismatch, missing {missing}, unexpected {unexpected}")


def export_hubert_ctc(upstream_or_model: HubertUpstream | HubertModel, lm_head: torch.nn.Linear, vocab: list[str],
                      directory: str | Path, word_delimiter: str = "|") -> Path:
    """Write a transformers ``HubertForCTC`` dir: our encoder, ``lm_head`` (``Linear(embed_dim, len(vocab))`` on the
    last hidden state), a ``Wav2Vec2CTCTokenizer`` over ``vocab`` (index 0, the CTC blank, is its pad token, as
    transformers' CTC decoding expects) and a ``Wav2Vec2FeatureExtractor`` that passes raw 16 kHz audio through
    (``do_normalize`` as the upstream normalises). Greedy decoding of ``from_pretrained``'s logits then gives
    the same tokens as the run's own. Built beside the target and renamed into place.

    Raises ConversionError when ``lm_head``'s shape does not fit the encoder and vocabulary.
    """
    import transformers

    model, _ = _as_model(upstream_or_model)
    if tuple(lm_head.weight.shape) != (len(vocab), model.cfg.embed_dim):
        raise ConversionError(f"export_hubert_ctc: lm_head is {tuple(lm_head.weight.shape)}, expected "
                              f"({len(vocab)}, {model.cfg.embed_dim})")
    config = transformers.HubertConfig(**config_to_hf(model.cfg), vocab_size=len(vocab), pad_token_id=0,
                                       ctc_loss_reduction="mean", final_dropout=0.0)
    hf_model = transformers.HubertForCTC(config)
    state = {f"hubert.{k}": v for k, v in state_to_hf(model.state_dict()).items()}
    state["lm_head.weight"], state["lm_head.bias"] = lm_head.weight.detach(), lm_head.bias.detach()
    _load_exact(hf_model, state, "export_hubert_ctc")
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        hf_model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
        tokenizer = transformers.Wav2Vec2CTCTokenizer(str(tmp / "vocab.json"), pad_token=vocab[0],
                                                      unk_token=vocab[0], bos_token=None, eos_token=None,
                                                      word_delimiter_token=word_delimiter)
        tokenizer.save_pretrained(tmp)
        transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                              do_normalize=bool(getattr(upstream_or_model, "normalize_waveform",
                                                                        False)),
                                              return_attention_mask=True).save_pretrained(tmp)
    return directory


__all__ = ["ConversionError", "export_hubert_ctc", "UnsafeCheckpointError", "export_hf", "load_model_state", "load_upstream_from_path",
           "safe_torch_load", "save_upstream"]
