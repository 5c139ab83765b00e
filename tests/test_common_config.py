"""Typed configs: YAML + dotted overrides, unknown keys and wrong types are errors that name the key."""
from dataclasses import dataclass, field

import pytest

from common.config import ConfigError, load_config, to_dict


@dataclass
class Optim:
    name: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Run:
    steps: int = 10
    optimizer: Optim = field(default_factory=Optim)
    layers: list[int] = field(default_factory=lambda: [4, 8, 12])
    note: str | None = None


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("steps: 20\noptimizer:\n  lr: 0.01\n")
    cfg = load_config(Run, p, ["optimizer.lr=1e-4", "layers=[2, 4]", "note=hello"])
    assert cfg.steps == 20
    assert cfg.optimizer.lr == pytest.approx(1e-4) and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.name == "adam"  # untouched defaults survive a partial section
    assert cfg.layers == [2, 4] and cfg.note == "hello"
    assert to_dict(cfg)["optimizer"]["betas"] == [0.9, 0.999]


def test_int_promotes_to_float_but_not_back():
    assert load_config(Run, overrides=["optimizer.lr=1"]).optimizer.lr == 1.0
    with pytest.raises(ConfigError, match="steps"):
        load_config(Run, overrides=["steps=2.5"])


@pytest.mark.parametrize("override, key", [("optimizer.lrr=1", "lrr"), ("stepz=3", "stepz")])
def test_unknown_keys_are_errors(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(Run, overrides=[override])


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        load_config(Run, overrides=["optimizer.lr=fast"])
    p = tmp_path / "bad.yaml"
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(Run, p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(Run, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Run, overrides=["steps"])
