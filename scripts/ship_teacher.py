"""Ship a pretrained teacher inside the project, so ``build_upstream("hubert_mini")`` loads it.

    python scripts/ship_teacher.py PRETRAIN_OUTPUT_DIR [--name hubert_mini] [--dest DIR]
        [--command "python run_pretrain.py ..."] [--commit SHA] [--machine TEXT]

Reads what ``run_pretrain.py --output PRETRAIN_OUTPUT_DIR`` wrote (``model.safetensors`` + ``upstream.yaml``,
``pretrain_config.yaml``, ``pretrain_summary.json``, ``iter*/loss_history.jsonl``) and writes
``upstream/pretrained/<name>/`` (or ``--dest``):

* ``model.safetensors`` — every weight in fp16 (half the bytes; ``build_upstream`` loads them back as fp32);
* ``upstream.yaml`` — our format's header (architecture, checksum);
* ``PROVENANCE.md`` — exact command, commit, corpus (size, seed, files, hours), updates per stage, wall time,
  machine, final masked-prediction accuracy, parameters, and the sha256 of ``model.safetensors``.

``--checkpoint OUTPUT/iterN/checkpoints/last.pt`` ships the model of that pretraining checkpoint instead of the
run's final model (an iteration chosen on the compute curve, or one whose successor has not finished; see
pretrain/export.py); the provenance then counts the stages up to iteration N and its final accuracy is that
checkpoint's. ``--note`` adds a line to PROVENANCE.md (e.g. the CPU minutes of a resumed run).

Then it prints that sha256: record it in ``upstream/builtin.py`` (``SHIPPED_SHA256``); ``build_upstream`` refuses
shipped weights whose sha256 differs from the recorded one. The folder is built beside ``--dest`` and renamed into
place, so a failed run leaves the previous one intact.

``run_pretrain.py`` records the command, commit and machine in ``pretrain_summary.json``; ``--command``,
``--commit`` and ``--machine`` give them for an output written before it did (and override the recorded ones).
Bad input (a missing or foreign folder, weights over ``--max-mb``, a weight that overflows fp16, a missing
provenance field): one line naming the file or flag, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from common.io import atomic_dir, sha256_file  # noqa: E402

# The mean over this many final logged updates is "the final masked-prediction accuracy" (one update is noisy).
FINAL_UPDATES = 10


class ShipError(ValueError):
    """Bad input: the message names the file or flag and what was expected."""


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShipError(f"{path}: expected run_pretrain.py's JSON summary ({e.__class__.__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ShipError(f"{path}: expected a JSON object")
    return data


def _history(path: Path) -> list[dict]:
    """One training stage's ``loss_history.jsonl`` (one record per update); [] when the stage did not run."""
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise ShipError(f"{path}: not a JSON-lines loss history ({e})") from None


def _corpus(data_dirs: list[str], summary: dict) -> dict:
    """Size and seed of the synthetic corpus (``<root>/.synth/build.json``) and the files/hours pretraining read."""
    builds = []
    for d in data_dirs:
        for root in (Path(d), *list(Path(d).parents)[:2]):
            marker = root / ".synth" / "build.json"
            if marker.is_file():
                builds.append({"root": str(root), **json.loads(marker.read_text())})
                break
    files, hours = summary.get("files"), summary.get("hours")
    if files is None or hours is None:  # an older run_pretrain.py did not record them: read the headers now
        import soundfile as sf

        from training.data import collect_audio_files

        paths = collect_audio_files(data_dirs)
        files = len(paths)
        hours = sum(sf.info(str(p)).duration for p in paths) / 3600
    return {"dirs": data_dirs, "builds": builds, "files": int(files), "hours": float(hours)}


def _stages(src: Path, last: str | None = None) -> list[tuple[str, list[dict]]]:
    """(stage, loss history) in training order, up to and including iteration ``last`` when given."""
    names = ["iter1_front_end", "iter1", "iter2_front_end", "iter2"]
    if last is not None:
        names = names[: names.index(last) + 1]
    return [(n, h) for n in names if (h := _history(src / n / "loss_history.jsonl"))]


def _checkpoint_iteration(src: Path, checkpoint: Path) -> str:
    """``iter1``/``iter2``: the iteration folder of ``src`` that ``checkpoint`` was written in."""
    for name in ("iter1", "iter2"):
        if checkpoint.resolve().is_relative_to((src / name).resolve()):
            return name
    raise ShipError(f"--checkpoint {checkpoint}: expected a checkpoint inside {src}/iter1 or {src}/iter2 "
                    "(OUTPUT/iterN/checkpoints/last.pt)")


def collect_provenance(src: Path, args: argparse.Namespace) -> dict:
    """Everything PROVENANCE.md states, from the pretraining output and the flags (see the module docstring)."""
    needed = ("pretrain_config.yaml",) if args.checkpoint else ("upstream.yaml", "model.safetensors",
                                                                 "pretrain_config.yaml", "pretrain_summary.json")
    for name in needed:
        if not (src / name).is_file():
            raise ShipError(f"{src / name}: missing; expected the --output folder of a finished run_pretrain.py run")
    summary = _read_json(src / "pretrain_summary.json") if (src / "pretrain_summary.json").is_file() else {}
    config = yaml.safe_load((src / "pretrain_config.yaml").read_text()) or {}
    if not isinstance(config, dict) or "config" not in config or "data" not in config:
        raise ShipError(f"{src / 'pretrain_config.yaml'}: expected keys 'config' and 'data' (run_pretrain.py's)")
    given = {"command": args.command, "commit": args.commit, "machine": args.machine}
    fields = {k: v if v is not None else summary.get(k) for k, v in given.items()}
    for k, v in fields.items():
        if not v:
            raise ShipError(f"{src / 'pretrain_summary.json'}: no {k!r} recorded (written by an older "
                            f"run_pretrain.py); pass --{k}")
    stages = _stages(src, _checkpoint_iteration(src, args.checkpoint) if args.checkpoint else None)
    masked = [(n, h) for n, h in stages if not n.endswith("front_end") and "masked_accuracy" in h[-1]]
    if not masked:
        raise ShipError(f"{src}: no iter1/ or iter2/ loss_history.jsonl with masked_accuracy; not a finished "
                        "run_pretrain.py output")
    if args.checkpoint:  # the checkpoint's own history: a stage's loss_history.jsonl may run past it
        from common.checkpoint import load_checkpoint

        history = load_checkpoint(args.checkpoint).get("history") or masked[-1][1]
        masked[-1] = (masked[-1][0], history)
        stages = [(n, history if n == masked[-1][0] else h) for n, h in stages]
    final = {n: sum(r["masked_accuracy"] for r in h[-FINAL_UPDATES:]) / len(h[-FINAL_UPDATES:]) for n, h in masked}
    run = config["config"].get("run", {})
    return {**fields, "summary": summary, "config": config["config"],
            "corpus": _corpus([str(d) for d in config["data"]], summary),
            "updates": {n: int(h[-1].get("step", len(h))) for n, h in stages},
            "final_masked_accuracy": final, "last_iteration": masked[-1][0],
            "seeds": {"run": run.get("seed"), "labels": config["config"].get("labels", {}).get("seed")},
            "note": args.note}


def to_fp16(src: Path, checkpoint: Path | None = None):
    """The pretrained upstream (``checkpoint``'s model when given) with every floating weight in fp16; raises
    ShipError when a weight overflows."""
    import torch

    from upstream.checkpoints import load_upstream_from_path
    from upstream.hubert import HubertUpstream

    if checkpoint is not None:
        from pretrain.export import ExportError, model_from_checkpoint

        try:
            upstream = HubertUpstream(model_from_checkpoint(checkpoint)[0])
        except ExportError as e:
            raise ShipError(str(e)) from None
    else:
        upstream = load_upstream_from_path(src)
    model = upstream.model
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p.half()).all():
            raise ShipError(f"{src / 'model.safetensors'}: weight {name} overflows fp16 (|w| max "
                            f"{p.abs().max().item():.3g} > 65504); it cannot be shipped in fp16")
    return upstream.__class__(model.half(), include_pred_heads=upstream.include_pred_heads)


def render_provenance(name: str, prov: dict, sha256: str, size_bytes: int, params: int) -> str:
    s, c = prov["summary"], prov["corpus"]
    builds = "; ".join(f"`{b['root']}`: synthetic corpus size `{b.get('size')}`, seed {b.get('seed')}"
                       for b in c["builds"]) or "not built by `python -m tasks.synth` (no .synth/build.json found)"
    acc = ", ".join(f"{n} {100 * v:.1f}%" for n, v in prov["final_masked_accuracy"].items())
    updates = ", ".join(f"{n} {k}" for n, k in prov["updates"].items())
    minutes = s.get("seconds", float("nan")) / 60
    last = prov["last_iteration"]
    note = f"| note | {prov['note']} |\n" if prov.get("note") else ""
    return f"""# {name}: shipped pretrained weights

`build_upstream("{name}")` loads `model.safetensors` from this folder after checking its sha256 against the value
recorded in `upstream/builtin.py` (`SHIPPED_SHA256`). Written by `scripts/ship_teacher.py`; do not edit by hand.

| | |
|---|---|
| command | `{prov['command']}` |
| commit | `{prov['commit']}` |
| corpus | {c['files']} files, {c['hours']:.3g} h of audio from {', '.join(f'`{d}`' for d in c['dirs'])}; {builds} |
| seeds | training `run.seed` {prov['seeds']['run']}, k-means `labels.seed` {prov['seeds']['labels']} |
| updates | {updates} (total {sum(prov['updates'].values())}) |
| wall time | {f"{minutes:.1f} min (`pretrain_summary.json`: {s.get('seconds')} s; a resumed run counts its last session)" if s.get('seconds') else "not recorded (shipped from a checkpoint of an unfinished run; see the note)"} |
| machine | {prov['machine']} |
| final masked-prediction accuracy | {acc} (mean of the last {FINAL_UPDATES} updates; {last} is the shipped model) |
| parameters | {params:,} ({params / 1e6:.2f} M, pretraining heads included) |
| weights | `model.safetensors`, fp16, {size_bytes / 2**20:.2f} MiB; loaded as fp32 |
| sha256 | `{sha256}` |
{note}
## Pretraining config

```yaml
{yaml.safe_dump(prov['config'], sort_keys=False, default_flow_style=None).rstrip()}
```
"""


def ship(src: Path, dest: Path, name: str, args: argparse.Namespace) -> str:
    """Write the shipped folder ``dest`` from the pretraining output ``src``; returns the weights' sha256."""
    from upstream.base import count_parameters
    from upstream.checkpoints import WEIGHTS_FILE, save_upstream

    if not src.is_dir():
        raise ShipError(f"{src}: no such folder; expected the --output folder of run_pretrain.py")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise ShipError(f"--checkpoint {args.checkpoint}: no such file")
    prov = collect_provenance(src, args)
    half = to_fp16(src, args.checkpoint)
    with atomic_dir(dest) as tmp:
        save_upstream(half, tmp)
        weights = tmp / WEIGHTS_FILE
        size = weights.stat().st_size
        if size > args.max_mb * 2**20:
            raise ShipError(f"{src / WEIGHTS_FILE}: {size / 2**20:.1f} MiB in fp16, over --max-mb {args.max_mb}")
        sha = sha256_file(weights)
        (tmp / "PROVENANCE.md").write_text(render_provenance(name, prov, sha, size, count_parameters(half.model)))
        os.chmod(tmp, 0o755)  # the shipped folder is readable to all, whatever the umask
    return sha


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("pretrain_output", type=Path, help="run_pretrain.py's --output folder")
    p.add_argument("--name", default="hubert_mini", help="the registered name that loads the weights")
    p.add_argument("--dest", type=Path, default=None, help="default upstream/pretrained/<name>")
    p.add_argument("--command", default=None, help="the exact pretraining command (when not recorded)")
    p.add_argument("--commit", default=None, help="the commit pretraining ran at (when not recorded)")
    p.add_argument("--machine", default=None, help="the machine pretraining ran on (when not recorded)")
    p.add_argument("--max-mb", type=float, default=15.0, help="refuse fp16 weights larger than this (MiB)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="ship this OUTPUT/iterN/checkpoints/last.pt's model instead of the run's final one")
    p.add_argument("--note", default=None, help="one more PROVENANCE.md line (e.g. CPU minutes of a resumed run)")
    args = p.parse_args(argv)
    dest = args.dest or ROOT / "upstream" / "pretrained" / args.name
    from upstream.convert import ConversionError

    try:
        sha = ship(args.pretrain_output, dest, args.name, args)
    except (ShipError, ConversionError) as e:  # ConversionError: weights that our loader refuses
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"shipped {args.pretrain_output} -> {dest} (fp16)")
    print(f"sha256 {sha}")
    print(f"record it in upstream/builtin.py: SHIPPED_SHA256 = {{{args.name!r}: {sha!r}}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
