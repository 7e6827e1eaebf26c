"""Name -> object registries for the plug-in points.

Every plug-in point (rewards, advantage estimators, objectives, loss terms, rollout engines) has one
`Registry`. A recipe names an entry either by its registered name or by an import path
`package.module:attr`, so user code plugs in without being registered anywhere.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, TypeVar

from rltune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = ()):
        self.kind = kind
        self._entries: dict[str, T] = {}
        # Modules whose import registers the built-in entries; imported lazily on first lookup so
        # that importing the registry never pulls heavy dependencies.
        self._builtin_modules = builtin_modules
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtin_modules:
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """Resolve a registered name or a `module:attr` import path."""
        if ":" in name:
            return import_object(name, self.kind)
        self._load_builtins()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}; "
                f"or give an import path 'package.module:attr'."
            )
        return self._entries[name]


def import_object(path: str, kind: str = "object") -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{kind} import path {path!r} must look like 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} for {kind} {path!r}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attr!r} (for {kind} {path!r})")
        obj = getattr(obj, part)
    return obj
