"""The manifest: reading, validation messages, precedence, frozen specs."""

from __future__ import annotations

import dataclasses

import pytest

from trainer_core.errors import ConfigError
from trainer_core.manifest import (
    DEFAULTS,
    default_manifest,
    load_manifest,
    manifest_from_dict,
    normalize_pair,
)


def write(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_seeds():
    spec = default_manifest().resolve("ETHUSDT")
    assert spec.train.epochs == 100 and spec.train.batch_size == 256 and spec.train.sequence_length == 120
    assert (
        spec.labels.future_window == 120
        and spec.labels.take_profit_pct == 1.0
        and spec.labels.stop_loss_pct == 0.5
    )
    assert list(spec.model.params["lstm_units"]) == [128, 64, 32] and spec.model.params["dropout"] == 0.3
    assert spec.tag == "ETHUSDT_FW120_SL050_TP100"
    assert spec.scaling.scaler == "robust" and spec.balance.method == "undersample"


def test_precedence_defaults_pair_set_flags(tmp_path):
    path = write(
        tmp_path,
        """
version: 1
output: out/
defaults:
  train: {epochs: 7, batch_size: 32}
  model: {params: {dropout: 0.1}}
pairs:
  - BTCUSDT
  - pair: ETHUSDT
    train: {epochs: 9, sequence_length: 30}
    model: {params: {lstm_units: [16]}}
""",
    )
    m = load_manifest(path)
    btc = m.resolve("BTCUSDT")
    assert (btc.train.epochs, btc.train.batch_size, btc.train.sequence_length) == (7, 32, 120)
    eth = m.resolve("ETHUSDT")
    assert (eth.train.epochs, eth.train.sequence_length) == (9, 30)
    # a per-pair params override merges into the defaults' params
    assert list(eth.model.params["lstm_units"]) == [16] and eth.model.params["dropout"] == 0.1
    eth = m.resolve("ETHUSDT", sets=["train.epochs=3", "train.sequence_length=12"], flags={"train.epochs": 2})
    assert eth.train.epochs == 2  # the named flag wins over --set
    assert eth.train.sequence_length == 12  # --set wins over the pair's entry
    assert eth.output == "out/"
    assert m.resolve("ETHUSDT", flags={"output": "elsewhere"}).output == "elsewhere"


def test_spec_is_frozen():
    spec = default_manifest().resolve("ETHUSDT")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.pair = "BTCUSDT"
    with pytest.raises(AttributeError):
        spec.train.epochs = 3
    with pytest.raises(TypeError):
        spec.train["epochs"] = 3
    assert isinstance(spec.model.params["lstm_units"], tuple)


def test_config_hash_tracks_what_is_trained():
    m = default_manifest()
    base = m.resolve("ETHUSDT")
    assert base.config_hash == m.resolve("ETHUSDT").config_hash
    assert base.config_hash != m.resolve("ETHUSDT", sets=["train.epochs=5"]).config_hash
    # where the data lie and how many cores a pair gets do not change the model
    assert (
        base.config_hash
        == m.resolve("ETHUSDT", sets=["resources.cpus=4"], flags={"data.path": "x/"}).config_hash
    )


def test_unknown_key_names_its_dotted_path(tmp_path):
    path = write(tmp_path, "version: 1\ndefaults:\n  train: {epoch: 3}\npairs: [ETHUSDT]\n")
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert "defaults.train.epoch" in err.value.message
    assert "epochs" in err.value.message  # the known keys are listed

    path = write(tmp_path, "version: 1\npairs:\n  - pair: ETHUSDT\n    trian: {epochs: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert "pairs[0].trian" in err.value.message

    path = write(tmp_path, "version: 1\noutputs: x\npairs: [ETHUSDT]\n")
    with pytest.raises(ConfigError, match="unknown setting 'outputs'"):
        load_manifest(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "defaults: {train: {epochs: ten}}",
            "defaults.train.epochs: expected an integer >= 1 and <= 100,000, got 'ten' (str)",
        ),
        ("defaults: {train: {epochs: 2.5}}", "expected an integer >= 1 and <= 100,000, got 2.5 (float)"),
        (
            "defaults: {split: {validation: 1.5}}",
            "defaults.split.validation: expected a number >= 0.000001 and <= 0.9",
        ),
        (
            "defaults: {scaling: {scaler: log}}",
            "defaults.scaling.scaler: expected one of 'robust', 'standard'",
        ),
        ("defaults: {train: {learning_rate: true}}", "expected a number > 0 and <= 10, got True (bool)"),
        ("defaults: {data: {start: 2024-13-01}}", "not valid YAML: month must be in 1..12"),
        ("defaults: {data: {start: 01.02.2024}}", "defaults.data.start: expected a date YYYY-MM-DD"),
        ("defaults: {reporters: metadata}", "defaults.reporters: expected a list of names"),
        ("defaults: {train: [1, 2]}", "defaults.train: expected a mapping of settings"),
        (
            "defaults: {balance: {class_weights: {5: 1.0}}}",
            "defaults.balance.class_weights: expected 'balanced' or a mapping",
        ),
    ],
)
def test_wrong_type_names_expected_type(tmp_path, text, expected):
    path = write(tmp_path, f"version: 1\n{text}\npairs: [ETHUSDT]\n")
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert expected in err.value.message


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "version: 1\npairs: [ETHUSDT\ndefaults: {\n")
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert "not valid YAML at line" in err.value.message


def test_yaml_is_read_with_the_safe_loader(tmp_path):
    path = write(tmp_path, "version: 1\npairs: [!!python/object/apply:os.system ['echo hacked']]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_manifest(path)


@pytest.mark.parametrize(
    "raw, expected", [("ETH/USDT", "ETHUSDT"), ("eth-usdt", "ETHUSDT"), ("BTCUSDT", "BTCUSDT")]
)
def test_pair_names_normalise(raw, expected):
    assert normalize_pair(raw) == expected


@pytest.mark.parametrize("raw", ["../x", "ETH.USDT", "A", "x" * 21, "", "ETH USDT/../../etc", 42])
def test_bad_pair_names_are_refused(raw):
    with pytest.raises(ConfigError):
        normalize_pair(raw)


def test_duplicate_pairs_and_bad_version():
    with pytest.raises(ConfigError, match="listed twice"):
        manifest_from_dict({"version": 1, "pairs": ["ETHUSDT", "eth/usdt"]})
    with pytest.raises(ConfigError, match="version: expected 1"):
        manifest_from_dict({"version": 2, "pairs": ["ETHUSDT"]})


def test_set_values_are_yaml_and_checked():
    m = default_manifest()
    spec = m.resolve(
        "ETHUSDT", sets=["model.params.lstm_units=[8, 4]", "balance.class_weights={0: 2, 1: 1, 2: 2}"]
    )
    assert list(spec.model.params["lstm_units"]) == [8, 4]
    assert dict(spec.balance.class_weights) == {0: 2.0, 1: 1.0, 2: 2.0}
    with pytest.raises(ConfigError, match="--set train.epochs=abc: train.epochs: expected an integer"):
        m.resolve("ETHUSDT", sets=["train.epochs=abc"])
    with pytest.raises(ConfigError, match="unknown setting 'trian.epochs'"):
        m.resolve("ETHUSDT", sets=["trian.epochs=3"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        m.resolve("ETHUSDT", sets=["train.epochs"])


def test_defaults_table_matches_design_sections():
    assert list(DEFAULTS) == [
        "data",
        "labels",
        "features",
        "split",
        "scaling",
        "balance",
        "model",
        "train",
        "evaluation",
        "resources",
        "reporters",
    ]


def test_validate_command(tmp_path, trainer):
    good = write(
        tmp_path, "version: 1\npairs: [ETHUSDT, BTC/USDT]\ndefaults: {train: {epochs: 3}}\n", "good.yaml"
    )
    result = trainer("validate", good)
    assert result.exit_code == 0, result.output
    assert "OK, 2 pair(s)" in result.output and "BTCUSDT" in result.output

    bad = write(tmp_path, "version: 1\npairs: [ETHUSDT]\ndefaults: {model: {builder: gru}}\n", "bad.yaml")
    result = trainer("validate", bad)
    assert result.exit_code == 2
    assert "Unknown model 'gru'" in result.output and "Known models: lstm" in result.output

    result = trainer("validate", tmp_path / "missing.yaml")
    assert result.exit_code == 2 and "Manifest not found" in result.output


def test_config_test_prints_resolved_spec(trainer):
    result = trainer(
        "run", "--pair", "ETH/USDT", "--epochs", "4", "--set", "train.sequence_length=60", "--config-test"
    )
    assert result.exit_code == 0, result.output
    assert "pair: ETHUSDT" in result.output
    assert "epochs: 4" in result.output and "sequence_length: 60" in result.output
    assert "Configuration OK." in result.output


def test_model_params_belong_to_their_builder():
    m = manifest_from_dict(
        {
            "version": 1,
            "defaults": {"model": {"builder": "other", "params": {"units": 5}}},
            "pairs": ["ETHUSDT"],
        }
    )
    assert dict(m.resolve("ETHUSDT").model.params) == {"units": 5}  # none of the lstm's defaults leak in
    spec = default_manifest().resolve("ETHUSDT", sets=["model.builder=other"])
    assert dict(spec.model.params) == {}
    spec = default_manifest().resolve("ETHUSDT", sets=["model.params.dropout=0.1"])
    assert spec.model.params["dropout"] == 0.1 and list(spec.model.params["lstm_units"]) == [128, 64, 32]
