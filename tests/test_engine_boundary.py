"""The engine and its plugins meet at one floor: a third-party feature set and labeler are resolved
once per pair (tag, horizon, embargo, columns) with the run's own plugins, every plugin failure names
the plugin, `--no-manifest-plugins` reaches every command that imports modules, and no engine module
names a plugin's features, figures, files or labelers (the seed's labeler's two known namings aside) nor
defines a plugin's command."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import trainer_core
from trainer_core.manifest import default_manifest
from trainer_core.testing import registered_plugin, resolved, synthetic_candles, tiny_spec

REPO = Path(__file__).resolve().parents[1]

MANIFEST = (
    "version: 1\nplugins: [two_features]\npairs: [ETHUSDT]\n"
    "defaults:\n  data: {loader: synthetic, params: {rows: 2000}}\n"
    "  features: {set: returns}\n  labels: {method: return-sign}\n"
)


def manifest(folder: Path, text: str = MANIFEST) -> Path:
    path = folder / "m.yaml"
    path.write_text(text)
    return path


def config_hash(trainer, path: Path, *sets: str) -> str:
    args = ["run", "--manifest", path, "--pair", "ETHUSDT", "--config-test"]
    for s in sets:
        args += ["--set", s]
    result = trainer(*args)
    assert result.exit_code == 0, result.output
    return re.search(r"config hash (sha256:[0-9a-f]+)", result.output).group(1)


# -- the resolved spec: tag, horizon, embargo ---------------------------------------------------------


def test_labels_and_features_params_are_accepted_by_set(trainer, feature_plugin, tmp_path):
    path = manifest(tmp_path)
    result = trainer(
        "run",
        "--manifest",
        path,
        "--pair",
        "ETHUSDT",
        "--config-test",
        "--set",
        "labels.params.horizon=12",
        "--set",
        "features.params.window=3",
    )
    assert result.exit_code == 0, result.output
    assert "(tag ETHUSDT-returns_SIGN012)" in result.output
    # the example of docs/manifest.md
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--config-test",
        "--set",
        "features.set=seed+context",
        "--set",
        "features.params.pairs=[BTCUSDT]",
    )
    assert result.exit_code == 0, result.output


def test_validate_and_config_test_show_the_plugin_labelers_tag(trainer, feature_plugin, tmp_path):
    path = manifest(tmp_path)
    result = trainer("validate", path)
    assert result.exit_code == 0, result.output
    assert "tag=ETHUSDT-returns_SIGN030" in result.output and "FW120" not in result.output
    result = trainer("run", "--manifest", path, "--pair", "ETHUSDT", "--config-test")
    assert "(tag ETHUSDT-returns_SIGN030)" in result.output, result.output


def test_the_config_hash_counts_the_plugin_labelers_horizon_in_the_embargo(trainer, feature_plugin, tmp_path):
    path = manifest(tmp_path)
    auto = config_hash(trainer, path, "split.embargo=auto")
    # the horizon is 30: an embargo of 10 purges the same 30 rows as auto, 120 purges more
    assert config_hash(trainer, path, "split.embargo=10") == auto
    assert config_hash(trainer, path, "split.embargo=120") != auto
    assert config_hash(trainer, path, "labels.params.horizon=50") != auto


def test_the_seed_labelers_tag_is_what_it_always_was():
    """Model folders keep their names: the tp-sl labeler, resolved by any plugin manager, tags the
    default spec as it always did, and the hash does not depend on which manager resolved it."""
    spec = default_manifest().resolve("ETHUSDT")
    with registered_plugin(object(), name="nothing") as plugins:
        from trainer_core.features import resolve_spec

        once = resolve_spec(spec, plugins)
    again = resolved(spec)
    assert once.tag == again.tag == "ETHUSDT_FW120_SL050_TP100"
    assert once.config_hash == again.config_hash


# -- candles in: rows made with the run's own plugins ---------------------------------------------------


class Honest:
    """One feature: the close's change, NaN on the first candle."""

    def columns(self, params):
        return ["close_change"]

    def warmup(self, params):
        return 1

    def compute(self, candles, params):
        close = candles["close"].to_numpy()
        return np.r_[np.nan, close[1:] / close[:-1] - 1].astype(np.float32)[:, None]


class Mutating(Honest):
    """The same feature, from a set that triples the close of the candles it is given, in place."""

    def compute(self, candles, params):
        out = super().compute(candles, params)
        close = candles["close"].to_numpy()
        candles.replace_column(candles.get_column_index("close"), pl.Series("close", close * 3.0))
        return out


class Components:
    """A throwaway plugin registering one feature set and one labeler."""

    def __init__(self, feature_set=None, labeler=None):
        self.feature_set, self.labeler = feature_set, labeler

    @trainer_core.hookimpl
    def trainer_register_feature_sets(self, register):
        if self.feature_set is not None:
            register("under-test", self.feature_set)

    @trainer_core.hookimpl
    def trainer_register_labelers(self, register):
        if self.labeler is not None:
            register("under-test", self.labeler)


def synthetic_spec(tmp_path, *sets):
    return tiny_spec(
        tmp_path,
        tmp_path / "out",
        "data.loader=synthetic",
        "data.params.rows=2000",
        "features.set=under-test",
        *sets,
    )


def load_with(tmp_path, feature_set=None, labeler=None, *sets):
    from trainer_core.pipeline import load_pair_data

    with registered_plugin(Components(feature_set, labeler), name="components-under-test") as plugins:
        return load_pair_data(synthetic_spec(tmp_path, *sets), plugins)[0]


def test_a_registered_feature_set_works_with_the_candle_loaders(tmp_path):
    data = load_with(tmp_path, Honest)
    assert data.feature_names == ("close_change",) and len(data) == 1999


def test_a_feature_set_that_edits_its_candles_leaves_the_labels_unchanged(tmp_path):
    honest = load_with(tmp_path, Honest)
    mutating = load_with(tmp_path, Mutating)
    assert np.array_equal(honest.labels, mutating.labels)
    assert np.array_equal(honest.features, mutating.features)


class NegativeHorizon:
    def horizon(self, params):
        return -5

    def tag(self, params):
        return "NEG"

    def compute(self, candles, params):
        n = len(candles)
        return np.ones(n, dtype=np.int8), np.zeros(n), np.zeros(n)


class WordHorizon(NegativeHorizon):
    def horizon(self, params):
        return "ten"


@pytest.mark.parametrize("labeler, shown", [(NegativeHorizon, "-5"), (WordHorizon, "'ten'")])
def test_a_bad_labeler_horizon_is_refused_on_the_data_path(tmp_path, labeler, shown):
    with pytest.raises(trainer_core.PluginError) as caught:
        load_with(tmp_path, Honest, labeler, "labels.method=under-test")
    message = caught.value.message
    assert "labeler 'under-test' (plugin components-under-test" in message
    assert f"returned a horizon of {shown}" in message


class NoColumns(Honest):
    def columns(self, params):
        return []

    def compute(self, candles, params):
        return np.zeros((len(candles), 0), dtype=np.float32)


class Twice(Honest):
    def columns(self, params):
        return ["close_change", "close_change"]

    def compute(self, candles, params):
        return np.zeros((len(candles), 2), dtype=np.float32)


class Huge(Honest):
    def compute(self, candles, params):
        out = np.ones((len(candles), 1), dtype=np.float64)
        out[::2] = 1e300
        return out


class Raising(Honest):
    def compute(self, candles, params):
        raise ZeroDivisionError("the plugin's own bug")


@pytest.mark.parametrize(
    "feature_set, expected",
    [
        (NoColumns, "has no feature columns"),
        (Twice, "names feature(s) close_change more than once"),
        (Huge, "beyond float32's range in column(s) close_change"),
        (Raising, "failed in compute(): ZeroDivisionError: the plugin's own bug"),
    ],
)
def test_a_feature_set_that_would_train_a_wrong_model_is_refused_by_name(tmp_path, feature_set, expected):
    with pytest.raises(trainer_core.PluginError) as caught:
        load_with(tmp_path, feature_set)
    message = caught.value.message
    assert "feature set 'under-test' (plugin components-under-test from " in message, message
    assert expected in message and "loader" not in message


def candle_file(tmp_path) -> Path:
    path = tmp_path / "candles" / "ETHUSDT-1m.parquet"
    path.parent.mkdir()
    synthetic_candles("ETHUSDT", 600).write_parquet(path)
    return path


def test_prepare_names_a_raising_plugin_in_one_line(trainer, tmp_path):
    (tmp_path / "raising_set.py").write_text(
        "from trainer_core import hookimpl\n\n"
        "class Broken:\n"
        "    def columns(self, params):\n        return ['x']\n"
        "    def warmup(self, params):\n        return 0\n"
        "    def compute(self, candles, params):\n        return [[object()]] * len(candles)\n\n"
        "@hookimpl\ndef trainer_register_feature_sets(register):\n    register('broken', Broken)\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        path = manifest(tmp_path, "version: 1\nplugins: [raising_set]\npairs: [ETHUSDT]\n")
        result = trainer(
            "prepare", "--manifest", path, "--pair", "ETHUSDT", "--data", candle_file(tmp_path),
            "--set", "features.set=broken", "--output", tmp_path / "inputs",
        )  # fmt: skip
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("raising_set", None)
    assert result.exit_code == 2, result.output
    assert "feature set 'broken' (plugin raising_set from raising_set)" in result.output
    assert "not numbers" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "inputs").exists() or not list((tmp_path / "inputs").iterdir())


# -- one plugin policy: --no-manifest-plugins everywhere --------------------------------------------


def noisy_module(folder: Path) -> Path:
    """A module that leaves a file behind when it is imported (a model folder or manifest is code)."""
    marker = folder / "imported"
    (folder / "noisy_plugin.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return marker


def test_prepare_honours_no_manifest_plugins(trainer, tmp_path, monkeypatch):
    marker = noisy_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = manifest(tmp_path, "version: 1\nplugins: [noisy_plugin]\npairs: [ETHUSDT]\n")
    data = candle_file(tmp_path)
    args = ("prepare", "--manifest", path, "--pair", "ETHUSDT", "--data", data, "--output", tmp_path / "in")
    result = trainer(*args, "--no-manifest-plugins")
    assert result.exit_code == 2, result.output
    assert "names plugin module 'noisy_plugin', and importing manifest plugins is turned off" in result.output
    monkeypatch.setenv("TRAINER_MANIFEST_PLUGINS", "0")
    result = trainer(*args)
    assert result.exit_code == 2 and "noisy_plugin" in result.output, result.output
    assert not marker.exists()
    assert "TRAINER_MANIFEST_PLUGINS" not in {k for k, v in __import__("os").environ.items() if v != "0"}


def test_the_flag_does_not_outlive_its_command(trainer, tmp_path):
    import os

    before = os.environ.get("TRAINER_MANIFEST_PLUGINS")
    trainer("validate", manifest(tmp_path, "version: 1\npairs: [ETHUSDT]\n"), "--no-manifest-plugins")
    assert os.environ.get("TRAINER_MANIFEST_PLUGINS") == before


def test_predict_and_verify_offer_no_manifest_plugins(trainer):
    for command in ("predict", "verify"):
        result = trainer(command, "--help")
        assert "--no-manifest-plugins" in result.output and "model folder" in " ".join(result.output.split())


def test_a_missing_plugin_module_hint_never_says_pip_install(tmp_path):
    from trainer_core.plugins import load_plugins

    with pytest.raises(trainer_core.PluginError) as caught:
        load_plugins(["trainer_surely_absent"], asked_by=f"the model folder {tmp_path}")
    assert "pip install" not in caught.value.hint and "someone else's" in caught.value.hint
    assert f"the model folder {tmp_path}" in caught.value.hint


# -- the engine names no plugin's features, figures or files ----------------------------------------


def engine_strings() -> dict[str, list[str]]:
    """Every string constant of every engine module (docstrings included), by module."""
    out = {}
    for path in (REPO / "trainer_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        out[str(path.relative_to(REPO))] = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
    return out


_ARTIFACTS = __import__("trainer_core.artifacts").artifacts
# the engine's own files and the optional serving files prediction reads (a reporter writes those)
ENGINE_FILES = {kind for kind, _ in (*_ARTIFACTS.ENGINE_KINDS, *_ARTIFACTS.SERVING_KINDS)}


def plugin_names() -> dict[str, set[str]]:
    """What the registered components name: feature columns, the figures reporters declare, and the
    files reporters write (``out.name(KIND, ...)`` prefixes and module-level file names)."""
    from trainer_core.features import feature_params, label_params_of, labeler_name
    from trainer_core.plugins import load_plugins

    plugins = load_plugins(entry_points=False)
    spec = default_manifest().resolve("ETHUSDT")
    names: dict[str, set[str]] = {"feature": set(), "figure": set(), "file": set(), "labeler": set()}
    for registration in plugins.registry:
        component = registration.factory()
        if registration.kind == "labeler":
            names["labeler"].add(registration.name)
            params = label_params_of(spec) if registration.name == labeler_name(spec) else {}
            try:
                names["labeler"].add(component.tag(params))
            except (trainer_core.TrainerError, KeyError, TypeError):
                pass
        if registration.kind == "feature-set":
            params = feature_params(spec) if registration.name == "seed" else {}
            try:
                names["feature"].update(component.columns(params))
            except trainer_core.TrainerError:
                pass
        if registration.kind == "reporter":
            names["figure"].update(getattr(component, "figures", None) or {})
            module = sys.modules[type(component).__module__]
            source = Path(module.__file__).read_text()
            names["file"].update(
                f"{kind}_"
                for kind in re.findall(r"out\.name\(\s*\"([a-z_]+)\"", source)
                if kind not in ENGINE_FILES  # the engine's own files, which a reporter may point at
            )
            names["file"].update(
                value
                for value in vars(module).values()
                if isinstance(value, str) and re.fullmatch(r"[\w.-]+\.(json|html|png|csv)", value)
            )
    return names


# Where the engine still names the seed's labeler: the built-in manifest's default `labels.method`
# (a manifest that names no labeler gets the original trainer's). Its settings, bounds and tag are
# the labeler's own: a spec has no tag, embargo or config hash until its labeler is resolved, so no
# engine module falls back to tp-sl's naming. Any other naming, or this one gone, fails the test.
SEED_LABELER_NAMED_BY = {"trainer_core/manifest/schema.py names the labeler 'tp-sl'"}


def test_the_training_ready_file_naming_is_the_loaders_own(tmp_path):
    """The seed's file name (pair, timeframe and FW/SL/TP in it) is written and read by the
    training-ready loader alone; prediction asks the loaders what a file's name holds."""
    from trainer_core.testing import training_ready_name, write_training_ready
    from trainer_plugins.loaders.training_ready import TrainingReadyLoader

    engine = {
        str(p.relative_to(REPO)): p.read_text()
        for p in (REPO / "trainer_core").rglob("*.py")
        if p.name != "testing.py"  # the built-in plugins' test helpers, which ask the loader
    }
    offenders = [name for name, text in engine.items() if re.search(r"__training_ready|__FW-|_TF-", text)]
    assert offenders == []
    name = training_ready_name("ETHUSDT", fw=7, sl_pct=0.3, tp_pct=0.6)
    assert name == "ETHUSDT_TF-1m__FW-007__SL-030__TP-060__training_ready.feather"
    assert TrainingReadyLoader().label_params_in_name(name) == {
        "pair": "ETHUSDT",
        "timeframe": "1m",
        "future_window": 7,
        "stop_loss_pct": 0.3,
        "take_profit_pct": 0.6,
    }
    assert TrainingReadyLoader().label_params_in_name("ETHUSDT-1m.parquet") is None
    assert write_training_ready(tmp_path, fw=7, sl_pct=0.3, tp_pct=0.6).name == name


def test_the_guard_knows_what_the_built_in_plugins_name():
    names = plugin_names()
    assert {"close_change", "price_to_ma43200"} <= names["feature"]
    assert {"total_net_return", "max_drawdown"} <= names["figure"]
    assert {"trading_", "confusion_matrix_", "summary.json", "summary.html"} <= names["file"]
    assert {"tp-sl", "FW120_SL050_TP100"} <= names["labeler"]


def test_no_engine_module_names_a_plugins_feature_figure_file_or_labeler():
    names = plugin_names()
    offenders = set()
    for module, strings in engine_strings().items():
        for kind, values in names.items():
            for value in values:
                pattern = re.compile(rf"(?<![\w.-]){re.escape(value)}(?![\w-])")
                if any(pattern.search(text) for text in strings):
                    offenders.add(f"{module} names the {kind} {value!r}")
    assert offenders == SEED_LABELER_NAMED_BY


def plugin_commands() -> dict[str, str]:
    """The commands the plugins register (`trainer_register_commands`), by name: their modules."""
    import click

    from trainer_core.plugins import load_plugins

    group = click.Group()
    load_plugins(entry_points=False).register_commands(group)
    return {
        name: command.callback.__module__ if command.callback else ""
        for name, command in group.commands.items()
    }


def engine_command_names() -> set[str]:
    """The names of the Click commands and groups any engine module defines (``@x.command``,
    ``@x.group``, ``click.command(...)``): the explicit name, else the function's, as Click makes it."""
    found = set()
    for path in (REPO / "trainer_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef):
                continue
            for decorator in node.decorator_list:
                call = decorator if isinstance(decorator, ast.Call) else None
                func = call.func if call else decorator
                if isinstance(func, ast.Attribute) and func.attr in ("command", "group"):
                    named = [a.value for a in (call.args if call else []) if isinstance(a, ast.Constant)]
                    named += [k.value.value for k in (call.keywords if call else []) if k.arg == "name"]
                    found.add(named[0] if named else node.name.replace("_", "-"))
    return found


def test_every_plugin_command_is_the_plugins_own():
    """A command a plugin registers (`trainer prepare` among them) is defined by the plugin, never
    by an engine module as well. (User-facing hints such as "run `trainer prepare`" may name them.)"""
    commands = plugin_commands()
    assert {"prepare", "download", "k8s"} <= set(commands)
    assert all(module.startswith("trainer_plugins.") for module in commands.values()), commands
    engine = engine_command_names()
    assert {"run", "batch", "predict", "validate"} <= engine, engine
    assert engine.isdisjoint(commands), engine & set(commands)


# -- docs/hooks.md tells the callbacks' real order -----------------------------------------------------

DOC_NAMES = {
    "ModelCheckpoint": "best checkpoint",
    "ResumableEarlyStopping": "early stopping",
    "ReduceLROnPlateau": "reduce-LR-on-plateau",
    "TensorBoard": "TensorBoard",
    "PluginCallback": "every plugin's lists",
    "RecordingBackupAndRestore": "backup-and-restore",
}


def test_hooks_md_gives_the_callbacks_in_the_order_fit_gets_them(tmp_path):
    import keras

    from trainer_core.pipeline.fit import _production_callbacks

    class PluginCallback(keras.callbacks.Callback):
        pass

    class Adds:
        @trainer_core.hookimpl
        def trainer_keras_callbacks(self, spec, pair_dir):
            return [PluginCallback()]

    spec = tiny_spec(tmp_path, tmp_path / "out")
    with registered_plugin(Adds(), name="adds") as plugins:
        callbacks = _production_callbacks(spec, tmp_path, plugins, {})
    order = ["stop-on-SIGTERM"] + [DOC_NAMES[type(c).__name__] for c in callbacks]  # SIGTERM: inserted first
    text = " ".join((REPO / "docs" / "hooks.md").read_text().split())
    section = text[text.index("### trainer_keras_callbacks") :]
    section = section[: section.index("```")]
    positions = [section.find(name) for name in order]
    assert -1 not in positions, (order, section)
    assert positions == sorted(positions), (order, section)
    assert "earlier folds" in section and "not called for them" in section


# -- end to end (each trains a tiny model or starts Ray) -------------------------------------------------


@pytest.mark.slow
def test_registered_plugin_trains_a_feature_set_on_the_synthetic_loader(tmp_path):
    from trainer_core.pipeline import run_pair

    with registered_plugin(Components(Honest), name="components-under-test") as plugins:
        result = run_pair(synthetic_spec(tmp_path), plugins, echo=lambda m: None)
    assert result.data.feature_names == ("close_change",)
    assert (Path(result.pair_dir) / f"model_{result.tag}.keras").exists()
    # reporters get the real candles the rows were made from, not prices rebuilt from features
    real = synthetic_candles("ETHUSDT", 2000)
    assert len(result.candles) == 2000
    assert np.array_equal(result.candles.close, real["close"].to_numpy())
    rows = np.searchsorted(result.candles.time_ms, result.data.timestamps.astype(np.int64))
    assert np.allclose(
        result.data.features[:, 0],
        real["close"].to_numpy()[rows] / real["close"].to_numpy()[rows - 1] - 1,
        rtol=1e-5,
    )


@pytest.mark.slow
def test_a_file_prepared_with_a_plugin_feature_set_trains(trainer, feature_plugin, tmp_path):
    path = manifest(
        tmp_path,
        "version: 1\nplugins: [two_features]\npairs: [ETHUSDT]\n"
        "defaults:\n  features: {set: returns}\n  labels: {method: return-sign, params: {horizon: 10}}\n",
    )
    prepared = trainer(
        "prepare", "--manifest", path, "--pair", "ETHUSDT", "--data", candle_file(tmp_path),
        "--output", tmp_path / "inputs",
    )  # fmt: skip
    assert prepared.exit_code == 0, prepared.output
    args = [
        "run",
        "--manifest",
        path,
        "--pair",
        "ETHUSDT",
        "--data",
        tmp_path / "inputs",
        "--output",
        tmp_path / "out",
    ]
    args += ["--set", "data.loader=training-ready", "--epochs", "1", "--set", "train.sequence_length=8"]
    args += ["--set", "model.params.lstm_units=[4]", "--set", "model.params.dense_units=[4]"]
    args += [
        "--set",
        "balance.min_per_class=0",
        "--set",
        "train.verbose=0",
        "--set",
        "split.min_validation_targets=20",
    ]
    result = trainer(*args)
    assert result.exit_code == 0, result.output
    spec = __import__("json").loads(
        (tmp_path / "out" / "ETHUSDT-returns" / "spec_ETHUSDT-returns_SIGN010.json").read_text()
    )
    assert spec["feature_names"] == ["close_change", "range_pct"]


@pytest.mark.slow
def test_a_failed_pairs_traceback_reaches_the_batch_log_and_after_batch(feature_plugin, tmp_path):
    import json
    import os
    import subprocess

    log = tmp_path / "rows.jsonl"
    (feature_plugin / "explodes.py").write_text(
        "import json\nfrom trainer_core import hookimpl\n\n"
        "@hookimpl\ndef trainer_before_pair(spec):\n    raise RuntimeError('boom in before_pair')\n\n"
        "@hookimpl\ndef trainer_after_batch(manifest, results):\n"
        f"    with open({str(log)!r}, 'a') as fh:\n"
        "        for r in results:\n"
        "            fh.write(json.dumps({'pair': r['pair'], 'status': r.status, 'traceback': r['traceback']}) + '\\n')\n"
    )
    path = manifest(
        tmp_path,
        f"version: 1\noutput: {tmp_path / 'out'}\nplugins: [explodes]\npairs: [ETHUSDT]\n"
        "batch: {max_retries: 0}\ndefaults:\n  data: {loader: synthetic, params: {rows: 2000}}\n"
        "  resources: {cpus: 1, gpus: 0}\n",
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(feature_plugin),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "batch", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout)
    assert proc.returncode == 1, out + proc.stderr
    failed = out.index("failed    ETHUSDT")
    assert "[ETHUSDT] Traceback (most recent call last)" in out[failed:], out
    assert "[ETHUSDT] RuntimeError: boom in before_pair" in out[failed:], out
    (row,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert row["status"] == "failed" and "RuntimeError: boom in before_pair" in row["traceback"]


# -- a component's code is fingerprinted, even when its version stays the same -----------------------

DRIFT = '''
import numpy as np
from trainer_core import hookimpl

SCALE = {scale}


class Drift:
    """The candle's range relative to its close, times SCALE."""

    def columns(self, params):
        return ["range"]

    def warmup(self, params):
        return 0

    def compute(self, candles, params):
        spread = (candles["high"] - candles["low"]) / candles["close"]
        return (spread.to_numpy() * SCALE).astype(np.float32).reshape(-1, 1)


@hookimpl
def trainer_register_feature_sets(register):
    register("drift", Drift)
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """``trainer-drift 0.1.0`` installed (an editable install's layout: a dist-info beside the module)
    with entry point ``drift``; returns the module's file, which a test edits in place."""
    import importlib

    site = tmp_path / "site"
    info = site / "trainer_drift-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: trainer-drift\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[trainer.plugins]\ndrift = trainer_drift\n")
    module = site / "trainer_drift.py"
    module.write_text(DRIFT.format(scale=100))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("TRAINER_LOAD_PLUGINS", raising=False)
    importlib.invalidate_caches()
    sys.modules.pop("trainer_drift", None)
    yield module
    sys.modules.pop("trainer_drift", None)


def test_the_batch_plan_sees_an_edited_component_whose_version_did_not_change(installed_plugin):
    from trainer_core.batch.planning import code_changes
    from trainer_core.plugins import load_plugins

    spec = default_manifest().resolve("ETHUSDT", sets=["features.set=drift"])
    before = load_plugins().code_fingerprint(spec)
    assert before["feature-set drift"].startswith("trainer-drift 0.1.0 sha256:")
    installed_plugin.write_text(DRIFT.format(scale=50))  # same version, other scaling
    after = load_plugins().code_fingerprint(spec)
    (change,) = code_changes(before, after)
    assert change.startswith("feature-set drift: trainer-drift 0.1.0 sha256:")
    # a marker written before code digests were recorded: the same version is the same code
    assert code_changes({**before, "feature-set drift": "trainer-drift 0.1.0"}, after) == []


@pytest.mark.slow
def test_predict_warns_about_an_edited_feature_set_and_refuses_with_strict(
    installed_plugin, trainer, tmp_path
):
    from trainer_core import load_pair_model
    from trainer_core.inference import CodeChangedWarning
    from trainer_core.pipeline import run_pair
    from trainer_core.plugins import load_plugins

    spec = tiny_spec(
        tmp_path, tmp_path / "out", "data.loader=synthetic", "data.params.rows=2000", "features.set=drift"
    )
    result = run_pair(spec, load_plugins(), echo=lambda m: None)
    candles = candle_file(tmp_path)
    args = ("predict", "--model-dir", result.pair_dir, "--data", candles)
    same = trainer(*args)
    assert same.exit_code == 0 and "changed since the model was trained" not in same.output, same.output

    installed_plugin.write_text(DRIFT.format(scale=50))
    warned = trainer(*args)
    assert warned.exit_code == 0, warned.output
    assert (
        "Warning: " in warned.output
        and "the feature-set 'drift' changed since the model was trained" in warned.output
    )
    refused = trainer(*args, "--strict")
    assert refused.exit_code == 2 and "changed since the model was trained" in refused.output
    assert "Retrain the pair" in refused.output

    model = load_pair_model(result.pair_dir)
    frame = pl.read_parquet(candles).tail(model.required_history)
    with pytest.warns(CodeChangedWarning, match="feature-set 'drift' changed"):
        model.predict_latest(frame)


@pytest.mark.slow
def test_predict_with_no_manifest_plugins_names_the_module_a_model_folder_asks_for(
    trainer, tmp_path, monkeypatch
):
    from trainer_core.manifest import load_manifest
    from trainer_core.pipeline import run_pair
    from trainer_core.plugins import load_plugins

    marker = noisy_module(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = manifest(tmp_path, "version: 1\nplugins: [noisy_plugin]\npairs: [ETHUSDT]\n")
    spec = tiny_spec(
        tmp_path,
        tmp_path / "out",
        "data.loader=synthetic",
        "data.params.rows=2000",
        "features.ma_short=30",
        "features.ma_long=120",
        manifest=load_manifest(str(path)),
    )
    result = run_pair(spec, load_plugins(spec.plugins), echo=lambda m: None)
    marker.unlink()
    sys.modules.pop("noisy_plugin", None)
    args = ("predict", "--model-dir", result.pair_dir, "--data", candle_file(tmp_path))
    refused = trainer(*args, "--no-manifest-plugins")
    assert refused.exit_code == 2, refused.output
    text = " ".join(refused.output.split())
    assert f"The model folder {result.pair_dir} names plugin module 'noisy_plugin'" in text
    assert "pip install" not in text
    monkeypatch.setenv("TRAINER_MANIFEST_PLUGINS", "0")
    assert trainer(*args).exit_code == 2
    assert not marker.exists()
    monkeypatch.delenv("TRAINER_MANIFEST_PLUGINS")
    allowed = trainer(*args)
    assert allowed.exit_code == 0 and marker.exists(), allowed.output


def test_tests_share_helpers_through_conftest_fixtures_not_imports():
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((REPO / "tests").glob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.match(r"\s*(from conftest import|import conftest)", line)
    ]
    assert offenders == []


# -- the batch's progress lines and table are a plugin's ---------------------------------------------


def test_hook_trainer_batch_progress(tmp_path):
    from trainer_core.batch import BatchRun
    from trainer_core.manifest import load_manifest

    seen, lines = [], []

    class Recorder:
        @trainer_core.hookimpl
        def trainer_batch_progress(self, event):
            seen.append(event)

    path = manifest(
        tmp_path,
        f"version: 1\noutput: {tmp_path / 'out'}\npairs: [ETHUSDT, BTCUSDT]\ndefaults:\n  data: {{loader: synthetic}}\n",
    )
    loaded = load_manifest(str(path))
    with registered_plugin(Recorder(), name="recorder") as plugins:
        run = BatchRun(loaded, [loaded.resolve(p) for p in loaded.pair_names], plugins, echo=lines.append)
        report = run.summarize()  # no pair trained: both are reported as not trained
        run.show(report)
    (event,) = seen
    assert event.kind == "finished" and event.report is report and event.pair is None
    assert [(r.pair, r.status) for r in event.report.rows] == [
        ("ETHUSDT", "cancelled"),
        ("BTCUSDT", "cancelled"),
    ]
    # the built-in console plugin printed the table, through the batch's echo
    printed = "\n".join(lines).splitlines()
    header = next(line for line in printed if line.startswith("PAIR"))
    assert header.split()[:3] == ["PAIR", "STATUS", "EPOCHS"]
    assert any(line.startswith("ETHUSDT") and "cancelled" in line for line in printed)


def test_the_console_plugin_formats_a_finished_pairs_line():
    from trainer_core import BatchEvent, BatchRow
    from trainer_plugins.reporters.console import line

    row = BatchRow("ETHUSDT", "failed", "error", error="boom", traceback="Traceback ...\nRuntimeError: boom")
    event = BatchEvent("failed", "ETHUSDT", "", done=1, to_run=3, failed=1, elapsed=65, echo=print, row=row)
    assert line(event) == "[01:05] failed    ETHUSDT        boom  (1/3 done, 1 failed, ETA 02:10)"


def test_the_console_plugin_formats_a_waiting_pairs_line():
    from trainer_core import BatchEvent
    from trainer_plugins.reporters.console import line

    event = BatchEvent(
        "waiting",
        "XRPUSDT",
        "waits for 1 CPU(s)",
        done=0,
        to_run=4,
        failed=0,
        elapsed=12,
        echo=print,
        waited=10,
    )
    assert (
        line(event)
        == "[00:12] waiting   XRPUSDT        not started after 00:10: waits for 1 CPU(s)  (0/4 done, 0 failed)"
    )
