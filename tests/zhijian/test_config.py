from pathlib import Path

import pytest
from conftest import ROOT

from zhijian.config import ConfigError, ZhijianConfig, load_config

CONFIGS = ROOT / "configs"


def test_defaults_are_the_production_model():
    config = load_config()
    assert config.model.base == "bert-base-chinese"
    assert config.serving.host == "127.0.0.1"


def test_unknown_key_is_an_error_naming_the_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  epochs: 2\n  learnin_rate: 0.1\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "training.learnin_rate: unknown key" in str(error.value)
    assert str(path) in str(error.value)


def test_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("features:\n  max_length: lots\n")
    with pytest.raises(ConfigError, match="features.max_length"):
        load_config(path)


def test_threshold_for_an_unknown_label_is_refused():
    with pytest.raises(ConfigError, match="unknown label 'rudeness'"):
        load_config(overrides=["thresholds.per_label={rudeness: 0.3}"])


def test_overrides_apply_over_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  base: scratch\ntraining:\n  epochs: 5\n")
    config = load_config(path, ["training.epochs=1", "features.context_turns=0"])
    assert (config.model.base, config.training.epochs, config.features.context_turns) == ("scratch", 1, 0)


def test_saved_config_reads_back_identically(tmp_path):
    config = load_config(overrides=["thresholds.per_label={abuse: 0.3}", "model.base=scratch"])
    config.save(tmp_path)
    assert load_config(tmp_path) == config


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    assert isinstance(load_config(path), ZhijianConfig)
