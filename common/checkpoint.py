"""Run checkpoints (``last.pt``, ``best.pt``) that load with ``torch.load(weights_only=True)``.

A run folder is as untrusted as a downloaded checkpoint: anyone who can write into it could plant a ``last.pt``
whose pickle runs code on ``--resume``. So everything this toolkit writes into a checkpoint is a plain type that
torch's restricted unpickler accepts (tensors, dicts, lists, numbers, strings, None), random-number-generator
states included (:func:`rng_state` stores them as tensors and lists of ints), and everything is read back with
``weights_only=True`` (:func:`load_checkpoint`); a file holding anything else is refused, never executed.
"""
from __future__ import annotations

import io
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io import atomic_write_bytes


class CheckpointError(ValueError):
    """A checkpoint file cannot be used: unreadable, or it holds objects other than plain data."""


def rng_state() -> dict:
    """The torch (CPU), numpy and Python global RNG states as plain types (tensors, ints, lists of ints)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy_key": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": int(pos), "numpy_has_gauss": int(has_gauss), "numpy_gauss": float(gauss),
            "python": list(random.getstate()[1])}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_key"].numpy().astype(np.uint32), int(state["numpy_pos"]),
                         int(state.get("numpy_has_gauss", 0)), float(state.get("numpy_gauss", 0.0))))
    random.setstate((3, tuple(int(x) for x in state["python"]), None))


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """``torch.save`` into memory, then an atomic write (a killed run leaves the previous checkpoint intact)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``.

    Raises :class:`CheckpointError` naming ``path`` when the file is unreadable or holds anything but plain data
    (a pickle with code in it is refused before any of it runs).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a page of advice to load it unsafely; keep only the line naming the object
        found = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand[^.\n]*", str(e))
        what = f"it calls {found.group(1)}" if found and found.group(1) else (found.group(0) if found else
                                                                            "not plain data")
        raise CheckpointError(f"{path}: refusing to load a checkpoint that holds objects other than tensors and "
                              f"plain data ({what}); this toolkit never writes such files: delete it or start a new "
                              f"run folder") from None
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 — junk bytes fail anywhere in the unpickler (KeyError, EOFError, ...)
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e}); delete it or start a new "
                              "run folder") from None
