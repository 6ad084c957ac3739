"""The plugin manager factory and the typed facade through which the engine calls hooks."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import PluginError, TrainerError
from .registry import KINDS, Registry

if TYPE_CHECKING:  # annotations only: importing these here would load the manifest and Click
    import click

    from .contract import BatchEvent, BatchRow, Manifest, PairSpec

#: the built-in plugins, registered on every manager like a third-party plugin would be
DEFAULT_PLUGINS = (
    "trainer_plugins.loaders.training_ready",
    "trainer_plugins.loaders.ohlcv",
    "trainer_plugins.loaders.synthetic",
    "trainer_plugins.balancers.undersample",
    "trainer_plugins.balancers.class_weights",
    "trainer_plugins.balancers.none",
    "trainer_plugins.models.lstm",
    "trainer_plugins.features.seed",
    "trainer_plugins.features.seed_context",
    "trainer_plugins.labelers.tp_sl",
    "trainer_plugins.reporters.metadata",
    "trainer_plugins.reporters.history",
    "trainer_plugins.reporters.confusion_matrix",
    "trainer_plugins.reporters.trading",
    "trainer_plugins.reporters.decision",
    "trainer_plugins.reporters.summary",
    "trainer_plugins.reporters.console",
    "trainer_plugins.commands.k8s",
    "trainer_plugins.commands.download",
    "trainer_plugins.commands.evaluate",
    "trainer_plugins.commands.tune",
    "trainer_plugins.lifecycle.versions",
    "trainer_plugins.commands.models",
    "trainer_plugins.commands.freqtrade",
    "trainer_plugins.commands.prepare",
)

ENTRY_POINT_GROUP = "trainer.plugins"
LOAD_PLUGINS_ENV = "TRAINER_LOAD_PLUGINS"
TRACE_PLUGINS_ENV = "TRAINER_TRACE_PLUGINS"
#: "0" refuses to import the modules a manifest names in `plugins:` (set by --no-manifest-plugins)
MANIFEST_PLUGINS_ENV = "TRAINER_MANIFEST_PLUGINS"
#: the distribution this package is installed as (the built-ins' origin in a code fingerprint)
DISTRIBUTION = "pair-trainer"


def manifest_plugins_allowed() -> bool:
    """False when TRAINER_MANIFEST_PLUGINS=0 (or --no-manifest-plugins) refuses manifest-named modules."""
    return os.environ.get(MANIFEST_PLUGINS_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def _allow_list() -> set[str] | None:
    """Plugin names allowed by TRAINER_LOAD_PLUGINS; None when the variable is unset."""
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def _import_plugin(module_name: str, origin: str, asked_by: str = "the manifest") -> Any:
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(
            f"Cannot import plugin module {module_name!r} ({origin}): {exc}.",
            f"Make the module importable (PYTHONPATH, or the distribution you know provides it; a package "
            f"of that name on an index may be someone else's), or remove it from {asked_by}'s `plugins`.",
        ) from exc


def get_plugin_manager(
    extra_plugins: Iterable[str] = (),
    *,
    load_entry_points: bool = True,
    default_plugins: Iterable[str] = DEFAULT_PLUGINS,
    manifest_plugins: bool | None = None,
    asked_by: str = "the manifest",
) -> pluggy.PluginManager:
    """Build a plugin manager: built-ins, then entry points, then the manifest's modules.

    ``TRAINER_LOAD_PLUGINS`` (comma-separated names; empty = none) restricts the
    third-party plugins loaded from entry points; built-ins always load. The manifest's modules
    load unless ``manifest_plugins`` is False (default: unless ``TRAINER_MANIFEST_PLUGINS=0``), which
    makes naming one an error.
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
        if not (manifest_plugins_allowed() if manifest_plugins is None else manifest_plugins):
            raise PluginError(
                f"{asked_by[0].upper()}{asked_by[1:]} names plugin module {module_name!r}, and "
                f"importing manifest plugins is turned off ({MANIFEST_PLUGINS_ENV}=0 or --no-manifest-plugins).",
                f"`plugins:` runs that module's code: check module {module_name!r}, then run without "
                f"--no-manifest-plugins, or remove it from {asked_by}'s `plugins:`.",
            )
        pm.register(_import_plugin(module_name, f"named in {asked_by}", asked_by), name=module_name)

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


def load_plugins(
    extra_plugins: Iterable[str] = (),
    *,
    entry_points: bool = True,
    manifest_plugins: bool | None = None,
    asked_by: str = "the manifest",
) -> Plugins:
    """The one plugin policy, used by the CLI, the batch workers, predict, prepare and
    `trainer_core.testing`: the built-ins, then the installed entry points (``TRAINER_LOAD_PLUGINS``
    restricts them; ``entry_points=False`` skips them), then the modules ``asked_by`` (a manifest, a
    model folder) names, unless ``manifest_plugins`` is False or, by default,
    ``TRAINER_MANIFEST_PLUGINS=0`` (what ``--no-manifest-plugins`` sets, so it reaches workers too)."""
    return Plugins(
        get_plugin_manager(
            extra_plugins,
            load_entry_points=entry_points,
            manifest_plugins=manifest_plugins,
            asked_by=asked_by,
        )
    )


def _enable_tracing(pm: pluggy.PluginManager) -> None:
    def before(hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        names = ", ".join(impl.plugin_name for impl in hook_impls)
        args = ", ".join(f"{k}={_short(v)}" for k, v in kwargs.items())
        print(f"[trainer trace] {hook_name}({args}) -> [{names}]", file=sys.stderr)

    def after(outcome: Any, hook_name: str, hook_impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        pass

    pm.add_hookcall_monitoring(before, after)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _source_digest(plugin: object) -> str:
    """``module sha256:<hex>`` of the source file that defines ``plugin`` (a module or an object)."""
    module = plugin if inspect.ismodule(plugin) else sys.modules.get(type(plugin).__module__)
    name = getattr(module, "__name__", type(plugin).__name__)
    try:
        path = inspect.getsourcefile(module) if module is not None else None
        data = open(path, "rb").read() if path else None
    except (OSError, TypeError):
        data = None
    if data is None:  # no source to read (a builtin or an object made at run time): its name is all we have
        return f"{name} (no source file)"
    return f"{name} sha256:{hashlib.sha256(data).hexdigest()}"


def _source_file(obj: object) -> str | None:
    """The source file of a module, or of the module that defines a class or an object's class."""
    module: Any = obj
    if not inspect.ismodule(obj):
        module = sys.modules.get(getattr(obj, "__module__", None) or type(obj).__module__)
    try:
        return inspect.getsourcefile(module) if module is not None else None
    except TypeError:
        return None


def _code_digest(*objects: object) -> str:
    """``sha256:<hex>`` over the source files of the given modules, classes or objects (the plugin
    module that registers a component and the module that defines its factory)."""
    digest = hashlib.sha256()
    for path in sorted({p for p in (_source_file(o) for o in objects if o is not None) if p}):
        try:
            with open(path, "rb") as fh:
                digest.update(path.rsplit("/", 1)[-1].encode() + b"\0" + fh.read())
        except OSError:
            digest.update(path.encode())
    return "sha256:" + digest.hexdigest()


def same_origin(recorded: str, now: str) -> bool:
    """Whether a component's recorded origin still holds: equal, or (for a record made before code
    digests were kept beside a distribution's version) the same distribution and version."""
    if recorded == now:
        return True
    return " sha256:" not in recorded and now.split(" sha256:")[0] == recorded


def _entry_point_distribution(plugin_name: str) -> str | None:
    """``dist-name version`` of the distribution whose entry point registered ``plugin_name``."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == plugin_name and ep.dist is not None:
            return f"{ep.dist.metadata['Name']} {ep.dist.version}"
    return None


class Plugins:
    """The one typed facade the engine uses to call hooks and look up components."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self._registry: Registry | None = None

    @classmethod
    def load(cls, extra_plugins: Iterable[str] = (), **kwargs: Any) -> Plugins:
        """A facade over :func:`get_plugin_manager`, the one policy (built-ins, entry points, then
        ``extra_plugins``); :func:`load_plugins` is the same with the engine's keyword names."""
        return cls(get_plugin_manager(extra_plugins, **kwargs))

    def register(self, plugin: object, name: str | None = None) -> None:
        """Add a plugin (a module or an object with hookimpls); its components join the registry."""
        self.pm.register(plugin, name=name)
        self._registry = None
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            raise PluginError(
                f"A plugin implements a hook that does not exist: {exc}.",
                "Check the hook name against docs/hooks.md.",
            ) from exc

    def unregister(self, plugin: object) -> None:
        """Remove a plugin added with :meth:`register`; its components leave the registry."""
        self.pm.unregister(plugin)
        self._registry = None

    # -- components ------------------------------------------------------
    @property
    def registry(self) -> Registry:
        """Every registered component, collected from the registration hooks on first use."""
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

                def register(
                    name: str, factory: Callable[[], Any], _kind: str = kind, _plugin: str = impl.plugin_name
                ) -> None:
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

    def create(self, kind: str, name: str) -> Any:
        """A new instance of the ``kind`` component registered as ``name`` (a `PluginError` if none)."""
        return self.registry.create(kind, name)

    # -- what produced a run ----------------------------------------------
    def code_fingerprint(self, spec: PairSpec) -> dict[str, str]:
        """What code a pair's run uses, for the resume check: a changed value means retrain.

        ``{"trainer": version, "loader NAME": origin, "balancer NAME": ..., "model NAME": ...,
        "reporter NAME": ... (each), "plugin MODULE": ... (each module the manifest names)}``.
        The origin of a built-in is this distribution and its version; of a component from an
        installed plugin, ``dist-name version`` of the distribution whose entry point registered
        it; of a module named in the manifest (or registered at run time), ``module sha256:HEX``
        of its source file. A name that is not registered is left out (the pre-flight reports it).
        """
        from .version import __version__

        out = {"trainer": __version__}
        used = [
            ("loader", spec.data.loader),
            ("balancer", spec.balance.method),
            ("model", spec.model.builder),
        ]
        used += [("reporter", name) for name in spec.reporters]
        from .manifest import DEFAULTS

        used += [
            ("feature-set", spec.features.get("set", DEFAULTS["features"]["set"])),
            ("labeler", spec.labels.get("method", DEFAULTS["labels"]["method"])),
        ]
        for kind, name in used:
            try:
                registration = self.registry.get(kind, name)
            except PluginError:
                continue
            out[f"{kind} {name}"] = self._origin(registration.plugin, registration.factory)
        for module_name in spec.plugins:
            out[f"plugin {module_name}"] = self._origin(module_name)
        return out

    def component_origin(self, kind: str, name: str) -> dict[str, str]:
        """Which plugin registered a component and where it comes from (``dist-name version``,
        or ``module sha256:HEX`` for a module named in a manifest)."""
        registration = self.registry.get(kind, name)
        return {
            "plugin": registration.plugin,
            "origin": self._origin(registration.plugin, registration.factory),
        }

    def describe(self, kind: str, name: str) -> str:
        """``feature set 'rsi' (plugin trainer_rsi from trainer-rsi 0.2.0)``: a component, the plugin that
        registered it and the distribution (or module) it came from, for messages."""
        label = f"{kind.replace('-', ' ')} {name!r}"
        try:
            registration = self.registry.get(kind, name)
        except PluginError:
            return label
        origin = self._origin(registration.plugin).split(" sha256:")[0]
        return f"{label} (plugin {registration.plugin} from {origin})"

    def _origin(self, plugin_name: str, factory: object = None) -> str:
        from .version import __version__

        if plugin_name in DEFAULT_PLUGINS:
            return f"{DISTRIBUTION} {__version__}"
        plugin = self.pm.get_plugin(plugin_name)
        dist = _entry_point_distribution(plugin_name) if plugin is not None else None
        if dist is not None:  # the version, and the code itself: an editable install keeps its version
            return f"{dist} {_code_digest(plugin, factory)}"
        return _source_digest(plugin) if plugin is not None else f"{plugin_name} (not loaded)"

    # -- CLI ---------------------------------------------------------------
    def register_commands(self, cli: click.Group) -> None:
        """Let every plugin add its Click commands to the ``trainer`` group."""
        self.pm.hook.trainer_register_commands(cli=cli)

    # -- lifecycle ---------------------------------------------------------
    def before_batch(self, manifest: Manifest, specs: Iterable[PairSpec]) -> None:
        """Call ``trainer_before_batch`` (``specs`` always arrives as a tuple)."""
        self.pm.hook.trainer_before_batch(manifest=manifest, specs=tuple(specs))

    def after_batch(self, manifest: Manifest, results: Sequence[BatchRow]) -> None:
        """Call ``trainer_after_batch`` with one outcome row per pair."""
        self.pm.hook.trainer_after_batch(manifest=manifest, results=results)

    def batch_progress(self, event: BatchEvent) -> None:
        """Call ``trainer_batch_progress`` (the console plugin prints it)."""
        self.pm.hook.trainer_batch_progress(event=event)

    def before_pair(self, spec: PairSpec) -> None:
        """Call ``trainer_before_pair``; a `TrainerError` raised there stops the pair."""
        self.pm.hook.trainer_before_pair(spec=spec)

    def after_pair(self, spec: PairSpec, result: Any) -> None:
        """Call ``trainer_after_pair`` with the committed pair's `PairResult`."""
        self.pm.hook.trainer_after_pair(spec=spec, result=result)

    def on_pair_error(self, spec: PairSpec, error: BaseException) -> None:
        """Call ``trainer_on_pair_error`` before the error propagates."""
        self.pm.hook.trainer_on_pair_error(spec=spec, error=error)

    def keras_callbacks(self, spec: PairSpec, pair_dir: Any) -> list[Any]:
        """Every plugin's extra Keras callbacks for this pair, concatenated (None adds nothing)."""
        callbacks: list[Any] = []
        for extra in self.pm.hook.trainer_keras_callbacks(spec=spec, pair_dir=pair_dir):
            if extra:
                callbacks.extend(extra)
        return callbacks
