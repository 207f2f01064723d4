"""Typed configuration: validation messages, overrides, round trip."""

from __future__ import annotations

import pytest
import yaml

from cxrlt.config import apply_overrides, load_config, parse_config
from cxrlt.errors import ConfigError

BASE = {
    "name": "t",
    "data": {"sources": [{"name": "csv", "labels": "labels.csv"}]},
    "model": {"backbone": "resnet18", "pooling": {"name": "lse", "gamma": 0.5}},
    "train": {"epochs": 2, "optimizer": {"name": "adamw", "lr": 1e-3}},
}


def test_valid_config_fills_defaults_and_round_trips():
    config = parse_config(BASE)
    assert config.model.pooling.params == {"gamma": 0.5}
    assert config.train.optimizer.params["weight_decay"] == 0.01
    assert config.loss.name == "bce"
    again = parse_config(yaml.safe_load(config.to_yaml()))
    assert again == config


def test_unknown_key_names_its_path():
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        parse_config({**BASE, "train": {"epoch": 3}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.epochs: .*integer.*'many'"):
        parse_config({**BASE, "train": {"epochs": "many"}})


def test_component_parameter_errors_name_the_parameter():
    bad = {**BASE, "model": {"pooling": {"name": "lse", "gama": 0.5}}}
    with pytest.raises(ConfigError, match=r"model\.pooling: .*gama: unknown key"):
        parse_config(bad)
    with pytest.raises(ConfigError, match=r"unknown pooling 'median'; choose one of: avg, gem, lse, max"):
        parse_config({**BASE, "model": {"pooling": "median"}})


def test_missing_required_section():
    with pytest.raises(ConfigError, match=r"data: required key is missing"):
        parse_config({"name": "x"})


def test_overrides_set_nested_values_and_expand_bare_names():
    raw = apply_overrides(BASE, ["train.epochs=7", "model.pooling.gamma=2", "model.head=linear",
                                 "model.head.dropout=0.5", "data.sources.0.labels=other.csv"])
    config = parse_config(raw)
    assert config.train.epochs == 7
    assert config.model.pooling.params["gamma"] == 2
    assert config.model.head.params["dropout"] == 0.5
    assert str(config.data.sources[0].params["labels"]) == "other.csv"
    assert BASE["train"]["epochs"] == 2  # the input is not modified


@pytest.mark.parametrize("override, message", [
    ("train.epochs", "must look like key.sub=value"),
    ("data.sources.3.labels=x", "not an index"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(BASE, [override])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line \d+: not valid YAML"):
        load_config(path)


def test_stage_fold_and_weights_validation():
    with pytest.raises(ConfigError, match="fold must be below folds"):
        parse_config({**BASE, "data": {**BASE["data"], "split": {"method": "kfold", "folds": 3, "fold": 3}}})
    with pytest.raises(ConfigError, match="source_weights has 2 values for 1 sources"):
        parse_config({**BASE, "data": {**BASE["data"], "source_weights": [1, 2]}})
