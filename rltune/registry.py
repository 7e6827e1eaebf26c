"""Name -> object registries for the plug-in points.

Every plug-in point (rewards, advantage estimators, objectives, loss terms, rollout engines) has one
`Registry`. A recipe names an entry either by its registered name or by an import path
`package.module:attr` (looked up in the working folder too) or a file path `path/to/file.py:attr`,
so user code plugs in without being registered anywhere.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
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
        """Decorator: the object under `name`. A name is taken once: a plug-in cannot replace a built-in or
        another plug-in (it takes a name of its own, or is named in recipes by its import path). The same
        object registered again (a module imported again, as in a notebook) is not a clash."""
        if not isinstance(name, str) or not name.strip() or ":" in name:
            raise ConfigError(
                f"{self.kind} name {name!r}: a registered name is a non-empty word without ':' (a ':' marks an "
                "import path, which needs no registration)"
            )

        def decorator(obj: T) -> T:
            if getattr(obj, "__module__", None) not in self._builtin_modules:
                self._load_builtins()  # so that a plug-in's clash with a built-in is found now, not at a lookup
            held = self._entries.get(name)
            if held is not None and _qualified_name(held) != _qualified_name(obj):
                raise ConfigError(
                    f"{self.kind} {name!r} is registered twice: by {_qualified_name(held)} and by "
                    f"{_qualified_name(obj)}; register the new one under another name"
                )
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
                f"or give an import path 'package.module:attr' or 'path/to/file.py:attr'."
            )
        return self._entries[name]


def _qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def import_object(path: str, kind: str = "object") -> Any:
    """The object named by 'package.module:attr' or 'path/to/file.py:attr'.

    Modules resolve from the working folder too, whichever way rltune was started (the `rltune` console
    script, unlike `python -m`, does not put it on the import path)."""
    module_name, sep, attr = path.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{kind} import path {path!r} must look like 'package.module:attr' or 'path/to/file.py:attr'")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        module = _import_file(Path(module_name), kind, path)
    else:
        cwd = os.getcwd()
        if cwd not in sys.path and "" not in sys.path:
            sys.path.append(cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"cannot import module {module_name!r} for {kind} {path!r}: {exc} (modules are looked up in the "
                f"working folder {cwd} and the installed packages; a file elsewhere can be named "
                "'path/to/file.py:attr')"
            ) from exc
        except Exception as exc:  # the user's module itself is broken: say so instead of a traceback
            raise ConfigError(
                f"importing {module_name!r} for {kind} {path!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        _refuse_shadowed(module_name, Path(cwd), kind, path)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{module_name!r} has no attribute {attr!r} (for {kind} {path!r})")
        obj = getattr(obj, part)
    return obj


def _refuse_shadowed(module_name: str, cwd: Path, kind: str, path: str) -> None:
    """A file or folder in the working folder named like an installed module (a local math_verify.py) is not
    what `import` finds: the installed module comes first on the path. Name both rather than use the wrong one."""
    top = module_name.split(".")[0]
    local = next((p for p in (cwd / f"{top}.py", cwd / top) if p.exists()), None)
    found = getattr(sys.modules.get(top), "__file__", None)
    if local is None or found is None or Path(found).resolve().is_relative_to(cwd.resolve()):
        return
    hint = (
        f"'./{top}.py:{path.rpartition(':')[2]}'"
        if local.suffix == ".py"
        else "a path to the file ('dir/file.py:attr')"
    )
    raise ConfigError(
        f"{kind} {path!r}: {top!r} is the installed module {found}, not {local} in the working folder; name "
        f"the file instead: {hint}"
    )


def _import_file(file: Path, kind: str, path: str) -> ModuleType:
    """Import a Python file as a module named after its resolved path, once per file."""
    file = file.expanduser().resolve()
    if not file.is_file():
        raise ConfigError(f"{kind} {path!r}: no file {str(file)!r}")
    # a stable name per file: the same file is the same module (pickling and `isinstance` work),
    # two files with the same stem do not replace each other
    name = f"rltune_plugin_{file.stem}_{hashlib.sha1(str(file).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{kind} {path!r}: {str(file)!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"{kind} {path!r}: importing {str(file)!r} failed: {type(exc).__name__}: {exc}") from exc
    return module
