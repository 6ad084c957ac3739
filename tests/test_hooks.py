"""One `test_hook_<name>` per hook: a throwaway plugin implements it and we check what a user would see.

Plus the order of hook calls over one tiny end-to-end pair, and what a failing pair calls.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from trainer_core import Balance, ConfigError, DataError, PairData, PluginError, hookimpl
from trainer_core.pipeline import check_components, run_pair
from trainer_core.testing import registered_plugin, tiny_spec, write_training_ready


def registration_plugin(hook_name: str, component_name: str, factory):
    """A throwaway plugin object whose ``hook_name`` registers ``factory`` as ``component_name``."""

    class Plugin:
        pass

    def impl(register):
        register(component_name, factory)

    impl.__name__ = hook_name
    setattr(Plugin, hook_name, staticmethod(hookimpl(impl)))
    return Plugin()


def assert_registered_by(plugins, kind: str, name: str, plugin_name: str, cls) -> None:
    component = plugins.create(kind, name)
    assert isinstance(component, cls)
    assert plugins.registry.get(kind, name).plugin == plugin_name
    assert name in plugins.registry.names(kind)


def assert_gone_after_unregistering(plugins, kind: str, name: str) -> None:
    with pytest.raises(PluginError, match=rf"Unknown {kind} '{name}'"):
        plugins.registry.get(kind, name)


# -- registration ---------------------------------------------------------------------------------


class ArrayLoader:
    """Rows from memory (a test loader)."""

    def load(self, spec):
        n = 50
        return PairData(
            timestamps=(np.arange(n) * 60_000).astype("datetime64[ms]"),
            features=np.zeros((n, 8), np.float32),
            labels=np.tile(np.array([0, 1, 2], np.int8), n)[:n],
            feature_names=tuple(f"f{i}" for i in range(8)),
            source=f"memory:{spec.pair}",
            sha256="",
        )


def test_hook_trainer_register_loaders(tmp_path):
    plugin = registration_plugin("trainer_register_loaders", "array", ArrayLoader)
    with registered_plugin(plugin, name="throwaway-loader") as plugins:
        assert_registered_by(plugins, "loader", "array", "throwaway-loader", ArrayLoader)
        assert plugins.registry.get("loader", "array").description == "Rows from memory (a test loader)."
        spec = tiny_spec(tmp_path, tmp_path / "out", "data.loader=array")
        check_components(spec, plugins)  # the spec's loader name resolves to the plugin's loader
        data = plugins.create("loader", spec.data.loader).load(spec)
        assert data.source == "memory:ETHUSDT"
    assert_gone_after_unregistering(plugins, "loader", "array")


class FirstThird:
    """The first third of the training targets."""

    def balance(self, labels, target_idx, rng, params):
        return Balance(target_idx[: len(target_idx) // 3], {0: 2.0, 1: 1.0, 2: 2.0})


def test_hook_trainer_register_balancers():
    plugin = registration_plugin("trainer_register_balancers", "first-third", FirstThird)
    with registered_plugin(plugin, name="throwaway-balancer") as plugins:
        assert_registered_by(plugins, "balancer", "first-third", "throwaway-balancer", FirstThird)
        labels = np.array([0, 1, 2] * 10, np.int8)
        result = plugins.create("balancer", "first-third").balance(
            labels, np.arange(30, dtype=np.int64), np.random.default_rng(0), {}
        )
        assert result.indices.tolist() == list(range(10))
        assert result.class_weight == {0: 2.0, 1: 1.0, 2: 2.0}
    assert_gone_after_unregistering(plugins, "balancer", "first-third")


class CheckedBuilder:
    """A builder that checks its parameters."""

    def check(self, params):
        if params.get("width", 1) < 1:
            raise ConfigError(f"model.params.width: expected >= 1, got {params['width']}.")

    def build(self, input_shape, n_classes, params):  # pragma: no cover - never trained here
        raise AssertionError("not built in this test")


def test_hook_trainer_register_model_builders(tmp_path):
    plugin = registration_plugin("trainer_register_model_builders", "checked", CheckedBuilder)
    with registered_plugin(plugin, name="throwaway-model") as plugins:
        assert_registered_by(plugins, "model", "checked", "throwaway-model", CheckedBuilder)
        good = tiny_spec(tmp_path, tmp_path / "out", "model.builder=checked", "model.params.width=3")
        check_components(good, plugins)
        bad = tiny_spec(tmp_path, tmp_path / "out", "model.builder=checked", "model.params.width=0")
        with pytest.raises(ConfigError, match=r"model.params.width: expected >= 1, got 0"):
            check_components(bad, plugins)  # the registered builder's check() is what runs
    assert_gone_after_unregistering(plugins, "model", "checked")


class NoteReporter:
    """note_{tag}.txt (a test reporter)."""

    def report_pair(self, result, out):
        out.write_text(out.name("note", "txt"), "hello")


def test_hook_trainer_register_reporters(tmp_path):
    plugin = registration_plugin("trainer_register_reporters", "note", NoteReporter)
    with registered_plugin(plugin, name="throwaway-reporter") as plugins:
        assert_registered_by(plugins, "reporter", "note", "throwaway-reporter", NoteReporter)
        spec = tiny_spec(tmp_path, tmp_path / "out", "reporters=[metadata, note]")
        check_components(spec, plugins)
    assert_gone_after_unregistering(plugins, "reporter", "note")
    with pytest.raises(PluginError, match=r"Unknown reporter 'note'"):
        check_components(spec, plugins)


def test_a_duplicate_name_is_rejected_naming_both_plugins():
    plugin = registration_plugin("trainer_register_balancers", "undersample", FirstThird)
    with registered_plugin(plugin, name="impostor") as plugins:
        with pytest.raises(PluginError) as caught:
            _ = plugins.registry
    message = str(caught.value)
    assert "'undersample' is registered twice" in message
    assert "'trainer_plugins.balancers.undersample'" in message and "'impostor'" in message


def test_components_register_in_plugin_order():
    plugin = registration_plugin("trainer_register_balancers", "undersample", FirstThird)
    with registered_plugin(plugin, name="impostor") as plugins:
        with pytest.raises(PluginError) as caught:
            _ = plugins.registry
    # the built-in was registered first, so the newcomer is the duplicate
    assert "by plugin 'trainer_plugins.balancers.undersample' and by plugin 'impostor'" in str(caught.value)


def test_an_unknown_name_lists_the_known_ones():
    plugin = registration_plugin("trainer_register_model_builders", "checked", CheckedBuilder)
    with registered_plugin(plugin, name="throwaway-model") as plugins:
        with pytest.raises(PluginError) as caught:
            plugins.create("model", "transformer")
    assert (
        str(caught.value)
        == "Unknown model 'transformer' (set by model.builder). Known models: checked, lstm."
    )
    assert "trainer plugins" in caught.value.hint


def test_a_failing_registration_hook_names_its_plugin():
    class Broken:
        @hookimpl
        def trainer_register_loaders(self, register):
            raise RuntimeError("boom")

    with registered_plugin(Broken(), name="broken-plugin") as plugins:
        with pytest.raises(
            PluginError, match=r"Plugin 'broken-plugin' failed in trainer_register_loaders: boom"
        ):
            _ = plugins.registry


def test_hook_trainer_register_commands():
    from trainer_core.cli import cli

    class Commands:
        @hookimpl
        def trainer_register_commands(self, cli):
            @cli.command(name="hello")
            @click.option("--name", default="world")
            def hello(name):
                """Say hello."""
                click.echo(f"Hello, {name}!")

    group = click.Group("trainer", commands=dict(cli.commands))  # a fresh copy: the real CLI stays clean
    with registered_plugin(Commands(), name="throwaway-commands") as plugins:
        plugins.register_commands(group)
    result = CliRunner().invoke(group, ["hello", "--name", "quant"])
    assert result.exit_code == 0, result.output
    assert result.output == "Hello, quant!\n"
    assert "hello" in CliRunner().invoke(group, ["--help"]).output
    assert "hello" not in cli.commands


# -- lifecycle: the facade passes the arguments through -------------------------------------------


class Recorder:
    """Records every lifecycle hook call as (hook, arguments)."""

    def __init__(self, callbacks=None):
        self.calls: list[tuple] = []
        self.callbacks = callbacks

    @hookimpl
    def trainer_before_batch(self, manifest, specs):
        self.calls.append(("before_batch", manifest, specs))

    @hookimpl
    def trainer_after_batch(self, manifest, results):
        self.calls.append(("after_batch", manifest, results))

    @hookimpl
    def trainer_before_pair(self, spec):
        self.calls.append(("before_pair", spec))

    @hookimpl
    def trainer_after_pair(self, spec, result):
        self.calls.append(("after_pair", spec, result))

    @hookimpl
    def trainer_on_pair_error(self, spec, error):
        self.calls.append(("on_pair_error", spec, error))

    @hookimpl
    def trainer_keras_callbacks(self, spec, pair_dir):
        self.calls.append(("keras_callbacks", spec, pair_dir))
        return self.callbacks


@pytest.fixture
def spec(tmp_path):
    return tiny_spec(tmp_path / "inputs", tmp_path / "out")


# trainer_before_batch and trainer_after_batch are tested through `trainer batch` in test_batch.py


def test_hook_trainer_before_pair(spec, tmp_path):
    recorder = Recorder()
    with registered_plugin(recorder, name="recorder") as plugins:
        plugins.before_pair(spec)
    assert recorder.calls == [("before_pair", spec)]

    class Veto:
        @hookimpl
        def trainer_before_pair(self, spec):
            raise ConfigError(f"{spec.pair} is vetoed.", "Ask the risk desk.")

    write_training_ready(tmp_path / "inputs")  # real data: only the veto can stop this pair
    with registered_plugin(Veto(), name="veto") as plugins:
        with pytest.raises(ConfigError, match="ETHUSDT is vetoed."):
            run_pair(spec, plugins, echo=lambda message: None)
    assert not (tmp_path / "out").exists()  # stopped before anything was loaded or written


def test_hook_trainer_after_pair(spec):
    recorder = Recorder()
    result = object()
    with registered_plugin(recorder, name="recorder") as plugins:
        plugins.after_pair(spec, result)
    assert recorder.calls == [("after_pair", spec, result)]


def test_hook_trainer_on_pair_error(spec):
    recorder = Recorder()
    error = DataError("no data")
    with registered_plugin(recorder, name="recorder") as plugins:
        plugins.on_pair_error(spec, error)
    assert recorder.calls == [("on_pair_error", spec, error)]


def test_hook_trainer_keras_callbacks(spec, tmp_path):
    first, second, third = object(), object(), object()
    a, b, c = Recorder([first]), Recorder(None), Recorder([second, third])
    with registered_plugin(a, name="a") as plugins:
        with registered_plugin(b, name="b", plugins=plugins):
            with registered_plugin(c, name="c", plugins=plugins):
                callbacks = plugins.keras_callbacks(spec, tmp_path)
    # every plugin's list, concatenated (pluggy calls the last registered first); None adds nothing
    assert sorted(map(id, callbacks)) == sorted(map(id, [first, second, third]))
    assert len(callbacks) == 3
    for recorder in (a, b, c):
        assert recorder.calls == [("keras_callbacks", spec, tmp_path)]


# -- a real pair ----------------------------------------------------------------------------------


def test_a_failing_pair_calls_on_pair_error_and_not_after_pair(tmp_path):
    recorder = Recorder()
    missing = tmp_path / "no-such-folder"
    spec = tiny_spec(missing, tmp_path / "out")
    with registered_plugin(recorder, name="recorder") as plugins:
        with pytest.raises(DataError, match="data path not found") as caught:
            run_pair(spec, plugins, echo=lambda message: None)
    assert [call[0] for call in recorder.calls] == ["before_pair", "on_pair_error"]
    assert recorder.calls[1][2] is caught.value  # the very error that then propagated
    assert not (tmp_path / "out" / "ETHUSDT").exists()


@pytest.mark.slow
def test_hook_call_order_over_one_tiny_pair(tmp_path):
    """before_pair -> keras_callbacks -> (fit: epoch callbacks) -> reporters -> committed -> after_pair."""
    import keras

    order: list[str] = []
    out = tmp_path / "out"
    success = out / "ETHUSDT" / "_SUCCESS.json"

    class EpochNote(keras.callbacks.Callback):
        def __init__(self, pair_dir):
            super().__init__()
            self.pair_dir = Path(pair_dir)

        def on_epoch_end(self, epoch, logs=None):
            order.append("epoch_end")
            (self.pair_dir / "epochs_seen.txt").write_text(f"{epoch + 1}\n")

    class OrderReporter:
        """Notes when reporters run (a test reporter)."""

        def report_pair(self, result, out):
            order.append("report_pair")

    class Ordered:
        @hookimpl
        def trainer_register_reporters(self, register):
            register("order", OrderReporter)

        @hookimpl
        def trainer_before_pair(self, spec):
            order.append("before_pair")

        @hookimpl
        def trainer_keras_callbacks(self, spec, pair_dir):
            order.append("keras_callbacks")
            return [EpochNote(pair_dir)]

        @hookimpl
        def trainer_after_pair(self, spec, result):
            order.append("after_pair")
            self.committed_when_called = success.is_file()
            self.result = result

        @hookimpl
        def trainer_on_pair_error(self, spec, error):
            order.append("on_pair_error")

    write_training_ready(tmp_path / "inputs")
    spec = tiny_spec(tmp_path / "inputs", out, "train.epochs=2", "reporters=[metadata, order]")
    plugin = Ordered()
    with registered_plugin(plugin, name="ordered") as plugins:
        result = run_pair(spec, plugins, echo=lambda message: None)

    assert order == ["before_pair", "keras_callbacks", "epoch_end", "epoch_end", "report_pair", "after_pair"]
    assert plugin.committed_when_called, "trainer_after_pair ran before _SUCCESS.json was written"
    assert plugin.result is result and result.pair_dir == str(out / "ETHUSDT")
    # a file a plugin's callback wrote into pair_dir is committed with the pair, checksum included
    assert (out / "ETHUSDT" / "epochs_seen.txt").read_text() == "2\n"
    assert "epochs_seen.txt" in json.loads(success.read_text())["artifacts"]
