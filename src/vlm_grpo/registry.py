"""Named registries that tasks, data sets, model names, model families, prompt styles and rewards
are added to, and the plug-in hook that lets other packages add to them.

A plug-in is a function taking no argument that calls the public `register_*` functions; it is
declared as an entry point in the group ``vlm_grpo.plugins`` of its package's metadata:

    [project.entry-points."vlm_grpo.plugins"]
    my_tasks = "my_package.vlm_plugin:register"

Every registry loads the plug-ins before its first lookup, so a name a plug-in registers is known
wherever names are resolved (configs, the command line, studies). The counting lab is such a
plug-in of this package: the core never imports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")
PLUGIN_GROUP = "vlm_grpo.plugins"


class _PluginLoader:
    """Loads the entry points of PLUGIN_GROUP once per process; a failing plug-in names itself."""

    def __init__(self) -> None:
        self.loaded = False
        self.loading = False

    def __call__(self) -> None:
        if self.loaded or self.loading:
            return
        self.loading = True  # plug-ins register into registries, which call back here
        try:
            for point in sorted(entry_points(group=PLUGIN_GROUP), key=lambda p: p.name):
                try:
                    point.load()()
                except Exception as exc:
                    raise RuntimeError(
                        f"vlm-grpo plug-in {point.name!r} ({point.value}) failed to load: {exc}"
                    ) from exc
            self.loaded = True
        finally:
            self.loading = False


load_plugins = _PluginLoader()


class Registry(Generic[T]):
    """name -> entry, with an error that lists the known names when a lookup fails."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T, replace: bool = False) -> None:
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry

    def get(self, name: str) -> T:
        load_plugins()
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; choose {', '.join(self.names())}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        load_plugins()
        return iter(sorted(self._entries.items()))


def import_object(spec: str, kind: str) -> Callable:
    """`package.module:attribute`, imported from exactly what the user named."""
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{kind} {spec!r} is not a registered name or 'module:attribute'")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{kind} {spec!r} could not be imported: {exc}") from exc
    if not callable(obj):
        raise ValueError(f"{kind} {spec!r} is not callable")
    return obj
