"""The manifest: reading, validation messages, precedence, frozen specs."""

from __future__ import annotations

import dataclasses

import pytest

import trainer_core
from trainer_core.errors import ConfigError
from trainer_core.manifest import (
    DEFAULTS,
    PairSpec,
    UnresolvedSpecError,
    default_manifest,
    load_manifest,
    manifest_from_dict,
    normalize_pair,
)
from trainer_core.testing import registered_plugin, resolved


def write(tmp_path, text, name="m.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_seeds():
    spec = resolved(default_manifest().resolve("ETHUSDT"))
    assert spec.train.epochs == 100 and spec.train.batch_size == 256 and spec.train.sequence_length == 120
    # the labeler's and the feature set's settings are their own params, defaults filled in by them
    assert dict(spec.labels) == {"method": "tp-sl", "params": {}}
    assert dict(spec.resolved["label_settings"]) == {
        "future_window": 120,
        "take_profit_pct": 1.0,
        "stop_loss_pct": 0.5,
        "short_take_profit_pct": 1.0,
        "short_stop_loss_pct": 0.5,
    }
    assert dict(spec.resolved["feature_settings"]) == {"ma_short": 1440, "ma_long": 43200}
    assert spec.resolved["horizon"] == 120 and spec.embargo == 120
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
    base = resolved(m.resolve("ETHUSDT"))
    assert base.config_hash == resolved(m.resolve("ETHUSDT")).config_hash
    assert base.config_hash != resolved(m.resolve("ETHUSDT", sets=["train.epochs=5"])).config_hash
    # where the data lie and how many cores a pair gets do not change the model
    assert (
        base.config_hash
        == resolved(m.resolve("ETHUSDT", sets=["resources.cpus=4"], flags={"data.path": "x/"})).config_hash
    )


def test_a_spec_has_no_tag_embargo_or_hash_until_its_components_are_resolved():
    spec = default_manifest().resolve("ETHUSDT")
    for what in ("tag", "embargo", "config_hash"):
        with pytest.raises(UnresolvedSpecError, match="resolved"):
            getattr(spec, what)


def test_a_spec_changed_after_it_was_resolved_is_resolved_again():
    """A tuning trial's spec is the pair's resolved spec with other params: its tag, horizon and hash
    are those of its own params, never the stale ones."""
    from trainer_core.pipeline import resolve_tag
    from trainer_core.plugins import load_plugins

    base = resolved(default_manifest().resolve("ETHUSDT"))
    changed = base.to_dict()
    changed["labels"]["params"]["future_window"] = 60
    trial = PairSpec.from_dict(changed)
    assert trial.resolved is not None and not trial.is_resolved
    for what in ("tag", "embargo", "config_hash"):
        with pytest.raises(UnresolvedSpecError):
            getattr(trial, what)
    again = resolve_tag(trial, load_plugins(entry_points=False))
    assert again.tag == "ETHUSDT_FW060_SL050_TP100" and again.embargo == 60
    assert again.config_hash != base.config_hash
    # a setting the components do not read keeps the resolution
    other = base.to_dict()
    other["train"]["epochs"] = 3
    assert PairSpec.from_dict(other).is_resolved and PairSpec.from_dict(other).tag == base.tag


# -- the seed's settings are its components' params; the old keys are aliases -------------------------

ALIASED = "version: 1\npairs: [ETHUSDT]\ndefaults:\n  labels: {future_window: 60, stop_loss_pct: 0.4}\n  features: {ma_long: 300}\n"
CANONICAL = (
    "version: 1\npairs: [ETHUSDT]\ndefaults:\n  labels: {params: {future_window: 60, stop_loss_pct: 0.4}}\n"
    "  features: {params: {ma_long: 300}}\n"
)


def test_the_old_label_and_feature_keys_are_read_as_params_in_a_file(tmp_path):
    aliased = resolved(load_manifest(write(tmp_path, ALIASED, "a.yaml")).resolve("ETHUSDT"))
    canonical = resolved(load_manifest(write(tmp_path, CANONICAL, "c.yaml")).resolve("ETHUSDT"))
    assert dict(aliased.labels.params) == {"future_window": 60, "stop_loss_pct": 0.4}
    assert dict(aliased.features.params) == {"ma_long": 300}
    assert aliased.to_dict() == canonical.to_dict()
    assert aliased.tag == "ETHUSDT_FW060_SL040_TP100" and aliased.embargo == 60
    assert aliased.config_hash == canonical.config_hash


def test_the_old_keys_are_read_as_params_by_set_and_in_a_pairs_entry(tmp_path):
    m = default_manifest()
    by_alias = m.resolve("ETHUSDT", sets=["labels.future_window=60", "features.ma_short=30"])
    by_params = m.resolve("ETHUSDT", sets=["labels.params.future_window=60", "features.params.ma_short=30"])
    assert by_alias.to_dict() == by_params.to_dict()
    assert dict(by_alias.labels.params) == {"future_window": 60}
    # a pair's entry: its alias lands in the params merged over the defaults' params
    text = CANONICAL.replace("pairs: [ETHUSDT]", "pairs: [{pair: BTCUSDT, labels: {take_profit_pct: 2.0}}]")
    entry = load_manifest(write(tmp_path, text)).resolve("BTCUSDT")
    assert dict(entry.labels.params) == {"future_window": 60, "stop_loss_pct": 0.4, "take_profit_pct": 2.0}
    assert resolved(entry).tag == "BTCUSDT_FW060_SL040_TP200"


def test_an_alias_and_its_params_key_with_different_values_is_one_clear_error(tmp_path, trainer):
    text = "version: 1\npairs: [ETHUSDT]\ndefaults:\n  labels: {future_window: 60, params: {future_window: 30}}\n"
    result = trainer("validate", write(tmp_path, text))
    assert result.exit_code == 2, result.output
    assert (
        "defaults.labels.future_window is 60 but defaults.labels.params.future_window is 30" in result.output
    )
    assert "Hint: Give the setting once, as labels.params.future_window." in result.output
    # the same value twice is no conflict
    same = "version: 1\npairs: [ETHUSDT]\ndefaults:\n  features: {ma_long: 300, params: {ma_long: 300}}\n"
    assert dict(load_manifest(write(tmp_path, same)).resolve("ETHUSDT").features.params) == {"ma_long": 300}


def as_an_older_trainer_wrote_it(spec: dict, future_window: int) -> None:
    """``spec``'s labels and features sections as a trainer before this one recorded them: tp-sl's and
    the seed's settings beside their (empty) params, every one written out."""
    fw, tp, sl = future_window, 1.0, 0.5
    spec["labels"] = dict(future_window=fw, take_profit_pct=tp, stop_loss_pct=sl, method="tp-sl", params={})
    spec["labels"].update(short_take_profit_pct=None, short_stop_loss_pct=None)
    spec["features"] = dict(set="seed", ma_short=1440, ma_long=43200, partial_history=False, params={})


def test_a_spec_recorded_by_an_older_trainer_reads_its_settings_as_params():
    recorded = default_manifest().resolve("ETHUSDT").to_dict()
    as_an_older_trainer_wrote_it(recorded, 60)
    spec = PairSpec.from_dict(recorded)
    assert dict(spec.labels)["method"] == "tp-sl" and set(spec.labels) == {"method", "params"}
    assert spec.labels.params["future_window"] == 60 and spec.features.params["ma_long"] == 43200
    assert resolved(spec).tag == "ETHUSDT_FW060_SL050_TP100"


def test_the_tp_sl_labeler_checks_its_own_bounds(tmp_path, trainer):
    for setting, shown in (
        (
            "labels.params.future_window=0",
            "labels.params.future_window: expected an integer >= 1 and <= 100,000",
        ),
        (
            "labels.take_profit_pct=1.0e308",
            "labels.params.take_profit_pct: expected a number > 0 and <= 1,000",
        ),
        ("labels.params.short_stop_loss_pct=-1", "labels.params.short_stop_loss_pct: expected a number > 0"),
        ("features.ma_long=1000000000", "features.params.ma_long: expected a whole number of candles"),
    ):
        result = trainer("run", "--pair", "ETHUSDT", "--set", setting, "--config-test")
        assert result.exit_code == 2, result.output
        assert shown in result.output and "Traceback" not in result.output, result.output
    spec = resolved(default_manifest().resolve("ETHUSDT", sets=["labels.params.future_window=100000"]))
    assert spec.embargo == 100_000  # the bound itself is accepted


class StrictLabeler:
    """A labeler with one setting of its own, refusing any other."""

    def check(self, params):
        trainer_core.reject_unknown(params, ("horizon",), "labels.params", "the strict labeler")

    def horizon(self, params):
        return int(params.get("horizon", 7))

    def tag(self, params):
        return f"H{self.horizon(params)}"

    def compute(self, candles, params):  # pragma: no cover - never trained here
        raise AssertionError


class Strict:
    @trainer_core.hookimpl
    def trainer_register_labelers(self, register):
        register("strict", StrictLabeler)


def test_a_plugin_labeler_sees_only_its_own_params_and_refuses_a_tp_sl_key_itself():
    m = default_manifest()
    with registered_plugin(Strict(), name="strict-labeler") as plugins:
        spec = resolved(m.resolve("ETHUSDT", sets=["labels.method=strict"]), plugins)
        assert spec.tag == "ETHUSDT_H7" and spec.embargo == 7
        assert dict(spec.resolved["label_params"]) == {}  # none of tp-sl's settings reach it
        with pytest.raises(ConfigError) as caught:
            resolved(m.resolve("ETHUSDT", sets=["labels.method=strict", "labels.future_window=60"]), plugins)
    assert caught.value.message.startswith(
        "Unknown setting labels.params.future_window for the strict labeler"
    )


def test_the_hash_counts_the_effective_settings_so_a_default_written_out_changes_nothing(trainer, tmp_path):
    m = default_manifest()
    plain = resolved(m.resolve("ETHUSDT")).config_hash
    for sets in (
        ["labels.params.future_window=120"],
        ["labels.future_window=120"],
        ["labels.short_take_profit_pct=1.0", "labels.params.stop_loss_pct=0.5"],
        ["features.params.ma_long=43200", "features.ma_short=1440"],
    ):
        assert resolved(m.resolve("ETHUSDT", sets=sets)).config_hash == plain, sets
    for sets in (["labels.params.future_window=60"], ["features.ma_long=300"], ["labels.take_profit_pct=2"]):
        assert resolved(m.resolve("ETHUSDT", sets=sets)).config_hash != plain, sets
    with registered_plugin(Strict(), name="strict-labeler") as plugins:
        strict = resolved(m.resolve("ETHUSDT", sets=["labels.method=strict"]), plugins).config_hash
        longer = ["labels.method=strict", "labels.params.horizon=9"]
        assert resolved(m.resolve("ETHUSDT", sets=longer), plugins).config_hash != strict


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


@pytest.mark.slow
def test_a_model_folder_whose_spec_an_older_trainer_wrote_still_predicts_and_verifies(tmp_path, trainer):
    """An older trainer kept tp-sl's and the seed's settings beside their params and recorded no
    label tag nor resolved components: the folder still verifies, and predicts with its own settings."""
    import json

    from trainer_core.testing import reseal, tiny_args, write_training_ready

    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=700, seed=3)
    out = tmp_path / "out"
    result = trainer("run", "--pair", "ETHUSDT", "--data", tmp_path / "inputs", "--output", out, *tiny_args())
    assert result.exit_code == 0, result.output
    folder = out / "ETHUSDT"
    spec_path = folder / "spec_ETHUSDT_FW005_SL050_TP100.json"
    doc = json.loads(spec_path.read_text())
    spec = doc["spec"]
    assert spec["labels"] == {"method": "tp-sl", "params": {"future_window": 5}}
    as_an_older_trainer_wrote_it(spec, 5)
    del spec["label_tag"], spec["resolved"]
    spec_path.write_text(json.dumps(doc))
    reseal(folder)

    assert trainer("verify", out).exit_code == 0
    ready = next((tmp_path / "inputs").iterdir())
    result = trainer("predict", "--model-dir", folder, "--data", ready)
    assert result.exit_code == 0 and "693 predictions (ETHUSDT_FW005_SL050_TP100)" in result.output, (
        result.output
    )
    # a training-ready file made with another future_window is refused by the recorded settings
    other = write_training_ready(tmp_path / "other", "ETHUSDT", rows=700, seed=3, fw=7)
    result = trainer("predict", "--model-dir", folder, "--data", other)
    assert result.exit_code == 2 and "future_window 7" in result.output and "future_window 5" in result.output


# -- evaluation: the reporters' settings, checked by the reporters that read them --------------------


def test_the_evaluation_section_is_checked_by_the_reporters_that_read_it(tmp_path, trainer):
    from trainer_plugins.reporters.trading.settings import DEFAULTS as EVALUATION
    from trainer_plugins.reporters.trading.settings import evaluation_settings

    spec = default_manifest().resolve("ETHUSDT", sets=["evaluation.fee_pct=0.1"])
    assert dict(spec.evaluation) == {"fee_pct": 0.1}  # the engine keeps what was written
    assert evaluation_settings(spec.evaluation) == {**EVALUATION, "fee_pct": 0.1}
    for setting, shown in (
        ("evaluation.fee_pct=1000", "evaluation.fee_pct: expected a number >= 0 and <= 100 or null"),
        ("evaluation.fe_pct=0.1", "Unknown setting evaluation.fe_pct. Known settings in evaluation: fee_pct"),
        ("evaluation.thresholds=[0, 2]", "evaluation.thresholds: expected a list of probabilities"),
    ):
        result = trainer("run", "--pair", "ETHUSDT", "--set", setting, "--config-test")
        assert result.exit_code == 2 and shown in result.output, result.output
    text = "version: 1\npairs: [ETHUSDT]\ndefaults: {evaluation: {min_signals: 0}}\n"
    result = trainer("validate", write(tmp_path, text))
    assert result.exit_code == 2 and "evaluation.min_signals: expected an integer >= 1" in result.output
    # with neither the trading nor the decision reporter, nothing reads the section
    quiet = text.replace("{evaluation:", "{reporters: [metadata], evaluation:")
    assert trainer("validate", write(tmp_path, quiet)).exit_code == 0
    # the section itself must be a mapping
    result = trainer("run", "--pair", "ETHUSDT", "--set", "evaluation.thresholds=[0.5]", "--config-test")
    assert result.exit_code == 0, result.output
    bad = "version: 1\npairs: [ETHUSDT]\ndefaults: {evaluation: [fee_pct]}\n"
    result = trainer("validate", write(tmp_path, bad))
    assert result.exit_code == 2 and "defaults.evaluation: expected a mapping" in result.output


def test_trainer_evaluate_refuses_a_bad_evaluation_setting_before_reading_anything(tmp_path):
    from trainer_plugins.reporters.trading.evaluate import evaluate_predictions

    with pytest.raises(ConfigError) as caught:
        evaluate_predictions(
            tmp_path / "absent.parquet",
            tmp_path / "absent-candles",
            None,
            pair="ETHUSDT",
            sets=["evaluation.slippage_bps=-1"],
        )
    assert caught.value.message.startswith("evaluation.slippage_bps: expected a number >= 0")
