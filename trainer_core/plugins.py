"""The plugin manager factory and the typed facade through which the engine calls hooks."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, TrainerError
from .registry import KINDS, Registry

#: the built-in plugins, registered on every manager like a third-party plugin would be
DEFAULT_PLUGINS = (
    "trainer_plugins.loaders.training_ready",
    "trainer_plugins.loaders.ohlcv",
    "trainer_plugins.loaders.synthetic",
    "trainer_plugins.balancers.undersample",
    "trainer_plugins.balancers.class_weights",
    "trainer_plugins.balancers.none",
    "trainer_plugins.models.lstm",
    "trainer_plugins.reporters.metadata",
    "trainer_plugins.reporters.history",
    "trainer_plugins.reporters.confusion_matrix",
    "trainer_plugins.reporters.trading",
    "trainer_plugins.commands.k8s",
)

ENTRY_POINT_GROUP = "trainer.plugins"
LOAD_PLUGINS_ENV = "TRAINER_LOAD_PLUGINS"
TRACE_PLUGINS_ENV = "TRAINER_TRACE_PLUGINS"


def _allow_list() -> set[str] | None:
    """Plugin names allowed by TRAINER_LOAD_PLUGINS; None when the variable is unset."""
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def _import_plugin(module_name: str, origin: str):
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"Cannot import plugin module {module_name!r} ({origin}): {exc}.",
            "Install the distribution that provides it, or remove it from the manifest's `plugins`.",
        ) from exc


def get_plugin_manager(
    extra_plugins: Iterable[str] = (),
    *,
    load_entry_points: bool = True,
    default_plugins: Iterable[str] = DEFAULT_PLUGINS,
) -> pluggy.PluginManager:
    """Build a plugin manager: built-ins, then entry points, then the manifest's modules.

    ``TRAINER_LOAD_PLUGINS`` (comma-separated names; empty = none) restricts the
    third-party plugins loaded from entry points; built-ins and the manifest's modules always load.
    ``TRAINER_TRACE_PLUGINS=1`` prints every hook call to stderr.
    """
    pm = pluggy.PluginManager("trainer")
    pm.add_hookspecs(hookspecs)
    for module_name in default_plugins:
        pm.register(_import_plugin(module_name, "built-in"), name=module_name)

    allowed = _allow_list()
    if load_entry_points:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed and ep.value not in allowed:
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party package must name itself
                raise PluginError(
                    f"Plugin {ep.name!r} (entry point {ep.value!r}) failed to load: {exc}.",
                    f"Fix or uninstall it, or leave it out with {LOAD_PLUGINS_ENV}.",
                ) from exc
            pm.register(plugin, name=ep.name)

    for module_name in extra_plugins:  # the manifest asks for these by name: the allow-list does not apply
        if pm.get_plugin(module_name) is not None:
            continue
        pm.register(_import_plugin(module_name, "named in the manifest"), name=module_name)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(
            f"A plugin implements a hook that does not exist: {exc}.",
            "Check the hook name against docs/hooks.md (every hook starts with `trainer_`).",
        ) from exc

    if os.environ.get(TRACE_PLUGINS_ENV, "") not in ("", "0"):
        _enable_tracing(pm)
    return pm


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    def before(hook_name, hook_impls, kwargs):
        names = ", ".join(impl.plugin_name for impl in hook_impls)
        args = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
        print(f"[trainer trace] {hook_name}({args}) -> [{names}]", file=sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        pass

    pm.add_hookcall_monitoring(before, after)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Plugins:
    """The one typed facade the engine uses to call hooks and look up components."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._registry: Registry | None = None

    @classmethod
    def load(cls, extra_plugins: Iterable[str] = (), **kwargs) -> "Plugins":
        return cls(get_plugin_manager(extra_plugins, **kwargs))

    # -- components ------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        trace = os.environ.get(TRACE_PLUGINS_ENV, "") not in ("", "0")
        for kind, hook_name in KINDS.items():
            caller = getattr(self.pm.hook, hook_name)
            # get_hookimpls() is in registration order (pluggy *calls* them last-registered first)
            for impl in caller.get_hookimpls():
                if trace:
                    print(f"[trainer trace] {hook_name}(register) -> [{impl.plugin_name}]", file=sys.stderr)

                def register(name, factory, _kind=kind, _plugin=impl.plugin_name):
                    registry.register(_kind, name, factory, _plugin)

                try:
                    impl.function(register=register)
                except TrainerError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"Plugin {impl.plugin_name!r} failed in {hook_name}: {exc}.",
                        "Fix or disable the plugin.",
                    ) from exc
        return registry

    def create(self, kind: str, name: str):
        return self.registry.create(kind, name)

    def plugin_names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin()]

    # -- CLI ---------------------------------------------------------------
    def register_commands(self, cli) -> None:
        self.pm.hook.trainer_register_commands(cli=cli)

    # -- lifecycle ---------------------------------------------------------
    def before_batch(self, manifest, specs) -> None:
        self.pm.hook.trainer_before_batch(manifest=manifest, specs=tuple(specs))

    def after_batch(self, manifest, results) -> None:
        self.pm.hook.trainer_after_batch(manifest=manifest, results=results)

    def before_pair(self, spec) -> None:
        self.pm.hook.trainer_before_pair(spec=spec)

    def after_pair(self, spec, result) -> None:
        self.pm.hook.trainer_after_pair(spec=spec, result=result)

    def on_pair_error(self, spec, error) -> None:
        self.pm.hook.trainer_on_pair_error(spec=spec, error=error)

    def keras_callbacks(self, spec, pair_dir) -> list:
        callbacks = []
        for extra in self.pm.hook.trainer_keras_callbacks(spec=spec, pair_dir=pair_dir):
            if extra:
                callbacks.extend(extra)
        return callbacks
