"""The component registry: which plugin registered which loader, balancer, model or reporter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .errors import PluginError

#: component kinds, in the order `trainer plugins` lists them, with their registration hook
KINDS = {
    "loader": "trainer_register_loaders",
    "balancer": "trainer_register_balancers",
    "model": "trainer_register_model_builders",
    "reporter": "trainer_register_reporters",
    "feature-set": "trainer_register_feature_sets",
    "labeler": "trainer_register_labelers",
}

#: the manifest setting that selects each kind, for messages
KIND_SETTING = {
    "loader": "data.loader",
    "balancer": "balance.method",
    "model": "model.builder",
    "reporter": "reporters",
    "feature-set": "features.set",
    "labeler": "labels.method",
}


@dataclass(frozen=True)
class Registration:
    """One registered component: its kind, name, factory and the plugin that registered it."""

    kind: str
    name: str
    factory: Callable[[], Any]
    plugin: str

    @property
    def description(self) -> str:
        """The first line of the factory's docstring ('' when it has none), as `trainer plugins` lists it."""
        doc = getattr(self.factory, "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """Components by kind and name; a duplicate name or an unknown one is a `PluginError`."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}

    def register(self, kind: str, name: str, factory: Callable[[], Any], plugin: str) -> None:
        """Add ``factory`` under ``kind`` and ``name``; a `PluginError` for an unknown kind, a bad name or factory, or a name taken."""
        if kind not in self._items:
            raise PluginError(f"Unknown component kind {kind!r}.", f"Use one of: {', '.join(KINDS)}.")
        if not isinstance(name, str) or not name:
            raise PluginError(f"Plugin {plugin!r} registered a {kind} with an invalid name {name!r}.")
        if not callable(factory):
            raise PluginError(
                f"Plugin {plugin!r} registered {kind} {name!r} with a factory that is not callable."
            )
        existing = self._items[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"The {kind} name {name!r} is registered twice: by plugin {existing.plugin!r} "
                f"and by plugin {plugin!r}.",
                "Uninstall or disable one of them (TRAINER_LOAD_PLUGINS), or rename the component.",
            )
        self._items[kind][name] = Registration(kind, name, factory, plugin)

    def get(self, kind: str, name: str) -> Registration:
        """The registration of ``kind`` ``name``; a `PluginError` naming the setting and the known names when there is none."""
        try:
            return self._items[kind][name]
        except KeyError:
            known = ", ".join(sorted(self._items.get(kind, {}))) or "none"
            setting = KIND_SETTING.get(kind, kind)
            raise PluginError(
                f"Unknown {kind} {name!r} (set by {setting}). Known {kind}s: {known}.",
                "Check the spelling, or install / name the plugin that provides it "
                "(`trainer plugins` lists what is registered).",
            ) from None

    def create(self, kind: str, name: str) -> Any:
        """A new component: the factory of ``kind`` ``name`` called."""
        return self.get(kind, name).factory()

    def names(self, kind: str) -> list[str]:
        """The names registered for ``kind``, sorted."""
        return sorted(self._items[kind])

    def __iter__(self) -> Iterator[Registration]:
        for kind in KINDS:
            for name in sorted(self._items[kind]):
                yield self._items[kind][name]
