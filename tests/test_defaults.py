"""Every default a user gets without asking, written down: config fields, the parameters of every function
and plug-in, class-level settings, module constants and the CLI's flags.

Behaviour tests mostly pass values explicitly, so a default changed by accident (a cap, a floor, a
timeout, a paper's coefficient) passes them all while every run that relies on it changes. This test
compares the defaults with tests/defaults.json. A deliberate change is made by regenerating the file,

    python tests/test_defaults.py --update

and shows in review as a one-line diff next to the code change.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import inspect
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = Path(__file__).with_name("defaults.json")
PACKAGES = {"rltune": "rltune", "eval": "rltune.eval", "rewards": "rltune.rewards"}  # folder: package
SKIPPED_MODULES = {"rltune.__main__"}  # runs the CLI when imported


def module_names() -> list[str]:
    names = []
    for folder, package in PACKAGES.items():
        for file in sorted((ROOT / folder).rglob("*.py")):
            parts = file.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *(parts[:-1] if parts[-1] == "__init__" else parts)))
            if name not in SKIPPED_MODULES:
                names.append(name)
    return names


def describe(value) -> str:
    """A stable text for a default: repr for plain data, the qualified name for code."""
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(describe(v) for v in value)) + "}"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{describe(k)}: {describe(v)}" for k, v in value.items()) + "}"
    if value is None or isinstance(value, (bool, int, float, str, bytes, enum.Enum)):
        return repr(value)
    if inspect.isroutine(value) or inspect.isclass(value):
        return f"{value.__module__}.{value.__qualname__}"
    return f"<{type(value).__name__}>"


def plain(value) -> bool:
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(plain(v) for v in value)
    if isinstance(value, dict):
        return all(plain(k) and plain(v) for k, v in value.items())
    return value is None or isinstance(value, (bool, int, float, str, bytes))


def parameter_defaults(func, where: str, out: dict[str, str]) -> None:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return
    for parameter in signature.parameters.values():
        if parameter.default is not inspect.Parameter.empty:
            out[f"{where}({parameter.name})"] = describe(parameter.default)


def field_default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return describe(f.default)
    if f.default_factory is not dataclasses.MISSING:
        made = f.default_factory()
        return describe(made) if plain(made) else f"{type(made).__name__}()"
    return "<required>"


def class_defaults(cls, where: str, out: dict[str, str]) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for name, f in fields.items():
        out[f"{where}.{name}"] = field_default(f)
    for name, value in vars(cls).items():
        if name in fields or (fields and name == "__init__"):  # a dataclass's __init__ repeats its fields
            continue
        if inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
            parameter_defaults(getattr(cls, name), f"{where}.{name}", out)
        elif plain(value) and not name.startswith("_"):  # private class state is not a setting
            out[f"{where}.{name}"] = describe(value)


def code_defaults() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in module_names():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if getattr(value, "__module__", None) != name and not plain(value):
                continue  # imported from elsewhere
            where = f"{name}.{attr}"
            if inspect.isclass(value):
                class_defaults(value, where, out)
            elif inspect.isfunction(value):
                parameter_defaults(value, where, out)
            elif attr.isupper() and attr != "TYPE_CHECKING" and plain(value):
                out[where] = describe(value)
    return out


def cli_defaults() -> dict[str, str]:
    from rltune.cli import build_compare_parser, build_parser

    out: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
            elif action.dest != "help":
                described = describe(action.default)
                if action.type is not None:
                    described += f" type={getattr(action.type, '__name__', type(action.type).__name__)}"
                if action.choices:
                    described += f" choices={describe(list(action.choices))}"
                out[f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"] = described

    walk(build_parser())
    walk(build_compare_parser())
    return out


def current() -> dict[str, str]:
    return {**code_defaults(), **cli_defaults()}


def test_every_default_is_the_written_one():
    expected = json.loads(SNAPSHOT.read_text())
    actual = current()
    changed = {k: f"{expected[k]} -> {actual[k]}" for k in expected.keys() & actual.keys() if expected[k] != actual[k]}
    assert not changed, f"defaults changed (if deliberate: python tests/test_defaults.py --update): {changed}"
    new, gone = sorted(actual.keys() - expected.keys()), sorted(expected.keys() - actual.keys())
    assert not new, f"new defaults, not in {SNAPSHOT.name} (python tests/test_defaults.py --update): {new}"
    assert not gone, f"defaults gone (python tests/test_defaults.py --update): {gone}"


def test_the_snapshot_reaches_every_kind_of_default():
    actual = current()
    assert actual["rltune.config.TrainConfig.save_every"] == "0"  # a config field
    assert (
        actual["rltune.rewards.length.SoftOverlongPunishment.__init__(cache_length)"] == "4096"
    )  # a plug-in parameter
    assert actual["rltune.models.load_tokenizer(trust_remote_code)"] == "False"  # a function parameter
    assert actual["rltune eval --max-tokens"] == "1024 type=int"  # a CLI flag
    assert actual["rltune.objectives.clipped.ClippedSurrogate.zero_advantage_is_zero_loss"] == "True"  # a class setting


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_defaults.py --update   (rewrites tests/defaults.json from the code)")
    sys.path.insert(0, str(ROOT))
    SNAPSHOT.write_text(json.dumps(current(), indent=0, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
