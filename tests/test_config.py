"""Config resolution: defaults < preset < --set < explicit options; unknown keys and bad types are errors."""

from __future__ import annotations

import pytest
import yaml

from aubench_cli import config
from aubench_cli.errors import UsageError


def test_defaults_follow_the_paper():
    cfg = config.Config()
    assert cfg.train.balance == "oversample"
    assert (cfg.train.pos_per_au, cfg.train.neg_per_au) == (4, 4)
    assert (cfg.train.epochs, cfg.train.batches_per_epoch, cfg.train.val_batches) == (600, 300, 300)
    assert cfg.eval.batches == 3000
    assert len(config.PAPER_AUS) == 12


def test_precedence(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"train": {"lr": 0.01, "epochs": 5, "norm": "sample-norm"}}))
    cfg = config.resolve(preset, ["train.epochs=7", "train.seed=3"], {"train.seed": 9, "train.norm": None})
    assert cfg.train.lr == 0.01  # from the preset
    assert cfg.train.epochs == 7  # --set beats the preset
    assert cfg.train.seed == 9  # an explicit option beats --set
    assert cfg.train.norm == "sample-norm"  # None options leave the value alone


def test_unknown_key_names_close_matches():
    with pytest.raises(UsageError) as info:
        config.resolve(sets=["train.epoch=3"])
    assert "train.epoch" in info.value.message
    assert "train.epochs" in info.value.hint


def test_unknown_section_in_preset(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(UsageError) as info:
        config.resolve(preset)
    assert "trian" in info.value.message


@pytest.mark.parametrize("item", ["train.epochs=abc", "train.epochs=1.5", "model.pretrained=maybe", "train.lr=x"])
def test_bad_types_are_errors(item):
    with pytest.raises(UsageError):
        config.resolve(sets=[item])


def test_values_are_typed():
    cfg = config.resolve(sets=["train.lr=1e-3", "train.epochs=2.0", "model.pretrained=true", "train.optimizer=null"])
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 2 and isinstance(cfg.train.epochs, int)
    assert cfg.model.pretrained is True
    assert cfg.train.optimizer is None


def test_malformed_set():
    with pytest.raises(UsageError):
        config.resolve(sets=["train.lr"])


def test_yaml_round_trip():
    cfg = config.resolve(sets=["train.lr=0.02", "model.arch=vgg16", "data.frames_frac=0.4"])
    again = config.from_dict(yaml.safe_load(config.dump_yaml(cfg)))
    assert again == cfg
    assert again != config.Config()


def test_missing_preset_lists_known_ones():
    with pytest.raises(UsageError) as info:
        config.resolve("no-such-preset")
    assert "no-such-preset" in info.value.message


def test_preset_must_be_a_mapping(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("- 1\n- 2\n")
    with pytest.raises(UsageError):
        config.resolve(preset)
