"""`make mutation-score`: mutation testing of rltune/, eval/ and rewards/ with cosmic-ray's operators.

`tests/mutants.py` checks the breakages someone thought of; this checks a seeded random sample of the
ones nobody chose. cosmic-ray (a maintained mutation tool) supplies the mutation operators and applies
them to the source; this script adds what a suite of 900 tests on 2 cores needs: a sample weighted by
lines, only the tests that cover the mutated function, a timeout per mutant and a cache.

1. Coverage map. Every test runs once under coverage with its node id as the context (child processes
   included); the map records, per test file, which functions of the package each test executed and
   how long it took. A test file whose text changed, or that is new, is measured again; nothing else is.
2. Sample. cosmic-ray's operators (comparisons, numbers, True/False, and/or/not, arithmetic and unary
   operators, for-loops, exceptions, break/continue) plus two of this script's (a call made as a
   statement removed, a keyword argument left out) enumerate every mutant of each module; each module
   gets a share of `--sample` by its number of lines, drawn with `--seed` from distinct sites.
3. Run. Each mutant is written into a copy of the tree (the checkout is never modified) and the tests
   that executed its function run, stopping at the first failure. A mutant outside any
   function (a default, a constant) runs tests/test_defaults.py first, then the tests of its module that
   name the changed identifier.
   A widely used function is reached by hundreds of tests: the ones whose text names what the mutant
   touches go first (rare names weigh most; the module's own test file counts as one), then the fastest,
   up to `--budget` measured seconds; a mutant that survives them while covering
   tests were left out runs again with `--survivor-budget` seconds of them. killed: a test failed, errored
   or the run went over its timeout (3x the tests' measured time plus startup); survived: all passed.
4. Cache. A result is keyed on the module's text, the mutant and the text of the test files it ran, so
   a rerun costs only what changed. A mutant killed before runs its killing test alone first: where
   that still fails, nothing else runs. `tests/mutation_equivalent.txt` lists mutants that cannot change
   behaviour (id and a one-line reason); they are not run or counted.

    python tests/mutation_score.py                      # map (if stale), sample, run, report
    python tests/mutation_score.py --modules rltune/advantages.py --jobs 1
    python tests/mutation_score.py --show survived      # diffs of the survivors
"""

from __future__ import annotations

import argparse
import ast
import copy
import functools
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("rltune", "eval", "rewards")
STATE_DIR = REPO / "runs" / "mutation"
EQUIVALENT_FILE = REPO / "tests" / "mutation_equivalent.txt"
STARTUP_S = 45.0  # pytest start-up with torch and transformers, added to every mutant's timeout
PRAGMA = "pragma: no mutate"
# Coverage attributes code run at import (module and class bodies, parameter defaults) to no test: the tests
# that check what the modules define run first on mutants there.
IMPORT_TIME_TESTS = ["tests/test_defaults.py::test_every_default_is_the_written_one"]


# --- operators ------------------------------------------------------------------------------------


def operators() -> dict[str, object]:
    """Operator name -> instance: cosmic-ray's own (those that take no arguments) and this script's two."""
    import parso
    from cosmic_ray.operators.operator import Example, Operator
    from cosmic_ray.operators.provider import OperatorProvider

    class RemoveCall(Operator):
        """A call made as a statement of its own (`self.lock.acquire()`) is dropped."""

        def mutation_positions(self, node):
            if (
                node.type == "atom_expr"
                and node.parent.type == "simple_stmt"
                and node.children[0].type != "keyword"
                and node.children[-1].type == "trailer"
                and node.children[-1].children[0].value == "("
                and not node.get_code().lstrip().startswith(("log.debug", "logger.debug"))
            ):
                yield node.start_pos, node.end_pos

        def mutate(self, node, index):
            return parso.python.tree.Keyword("None", node.start_pos, prefix=node.get_first_leaf().prefix)

        @classmethod
        def examples(cls):
            return (Example("f(x)\n", "None\n"),)

    class DropKeywordArgument(Operator):
        """One keyword argument of a call is left out, so the callee's default applies."""

        @staticmethod
        def _keywords(node):
            if node.type == "arglist" and node.parent.type == "trailer":
                return [
                    c
                    for c in node.children
                    if c.type == "argument" and c.children[1].type == "operator" and c.children[1].value == "="
                ]
            if node.type == "trailer" and len(node.children) == 3 and node.children[1].type == "argument":
                arg = node.children[1]
                return [arg] if arg.children[1].type == "operator" and arg.children[1].value == "=" else []
            return []

        def mutation_positions(self, node):
            for arg in self._keywords(node):
                yield arg.start_pos, arg.end_pos

        def mutate(self, node, index):
            arg = self._keywords(node)[index]
            children = node.children
            at = children.index(arg)
            if node.type == "trailer":
                del children[at]
            elif at + 1 < len(children) and children[at + 1].type == "operator" and children[at + 1].value == ",":
                del children[at : at + 2]
            else:
                del children[at - 1 : at + 1]
            return node

        @classmethod
        def examples(cls):
            return (Example("f(a, b=1)", "f(a)"),)

    provider = OperatorProvider()
    chosen = {}
    for name in provider:
        cls = provider[name]
        if cls.arguments() or name in ("RemoveDecorator",):
            continue  # decorators: removing @dataclass breaks every import, which says nothing about tests
        chosen[name] = cls()
    chosen["RemoveCall"] = RemoveCall()
    chosen["DropKeywordArgument"] = DropKeywordArgument()
    return chosen


# --- mutants --------------------------------------------------------------------------------------


@dataclass
class Mutant:
    module: str  # path relative to the repo
    operator: str
    occurrence: int
    line: int
    function: str | None  # innermost enclosing function's qualified name; None at module or class level
    import_time: bool = False  # runs when the module is imported: module or class level, a parameter default
    equivalent: str = ""  # why it cannot change behaviour, when a rule knows (see enumerate_mutants)
    id: str = ""
    diff: str = ""

    def apply(self, source: str, ops: dict) -> str | None:
        from cosmic_ray.mutating import MutationVisitor

        return MutationVisitor.mutate_code(source, ops[self.operator], self.occurrence)


def qualified_function(node) -> str | None:
    """The dotted names of the functions and classes around a parso node, if a function is among them."""
    import parso

    names, in_function = [], False
    while node is not None:
        if isinstance(node, parso.python.tree.Lambda):
            pass
        elif isinstance(node, parso.python.tree.Function):
            in_function = True
            names.append(node.name.value)
        elif isinstance(node, parso.python.tree.Class):
            names.append(node.name.value)
        node = node.parent
    return ".".join(reversed(names)) if in_function else None


def source_files() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts)


def enumerate_mutants(path: Path, ops: dict) -> list[Mutant]:
    """Every mutant of one module, in cosmic-ray's occurrence order, lines with the pragma left out."""
    from cosmic_ray.ast import ast_nodes, get_ast

    source = path.read_text()
    lines = source.splitlines()
    tree = get_ast(source)
    nodes = list(ast_nodes(tree))
    rel = str(path.relative_to(REPO))
    # Under postponed evaluation a function's annotations are strings nothing evaluates (dataclass fields'
    # are evaluated: the recipe loader reads their types).
    postponed = "from __future__ import annotations" in source
    found = []
    for name, op in ops.items():
        occurrence = 0
        for node in nodes:
            for start, _ in op.mutation_positions(node):
                if not is_docstring(node) and PRAGMA not in lines[start[0] - 1]:
                    mutant = Mutant(
                        rel, name, occurrence, start[0], qualified_function(node), evaluated_at_import(node)
                    )
                    if postponed and in_signature_annotation(node):
                        mutant.equivalent = "a function annotation: never evaluated (postponed annotations)"
                    found.append(mutant)
                occurrence += 1
    return found


def evaluated_at_import(node) -> bool:
    """Whether a parso node runs when its module is imported: not inside a function's or a lambda's body."""
    child, parent = node, node.parent
    while parent is not None:
        if parent.type == "funcdef":
            return child.type == "parameters"  # a default is evaluated with the `def`
        if parent.type == "lambdef":
            return False
        child, parent = parent, parent.parent
    return True


def in_signature_annotation(node) -> bool:
    """Whether a parso node lies in a parameter's or a return annotation."""
    child, parent = node, node.parent
    while parent is not None:
        kids = parent.children
        at = next(i for i, kid in enumerate(kids) if kid is child)
        if parent.type == "tfpdef" and at >= 2:
            return True
        if parent.type == "funcdef" and at > 0 and kids[at - 1].type == "operator" and kids[at - 1].value == "->":
            return True
        child, parent = parent, parent.parent
    return False


def compiles(code: str) -> bool:
    """Whether a mutant is valid Python without warnings (`x is 0` draws a SyntaxWarning: not a real mutant)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            compile(code, "<mutant>", "exec")
        except (SyntaxError, SyntaxWarning):
            return False
    return True


def is_docstring(node) -> bool:
    return node.type == "string" or (node.parent is not None and node.parent.type == "string")


def describe(mutant: Mutant, source: str, mutated: str) -> Mutant:
    """Fill in the diff and a stable id: module, function, operator and the changed lines (not line numbers)."""
    import difflib

    changed = [
        d
        for d in difflib.unified_diff(source.splitlines(), mutated.splitlines(), lineterm="", n=0)
        if d[:1] in "+-" and not d.startswith(("+++", "---"))
    ]
    mutant.diff = "\n".join(changed)
    digest = hashlib.sha1("\n".join(c.strip() for c in changed).encode()).hexdigest()[:10]
    mutant.id = f"{mutant.module}:{mutant.function or '<module>'}:{mutant.operator}:{digest}"
    return mutant


def sample(mutants_by_module: dict[str, list[Mutant]], total: int, seed: int) -> list[Mutant]:
    """`total` mutants shared out by module length, each module's drawn from distinct sites first."""
    sizes = {m: len((REPO / m).read_text().splitlines()) for m, ms in mutants_by_module.items() if ms}
    all_lines = sum(sizes.values())
    chosen = []
    for module, size in sizes.items():
        quota = max(1, round(total * size / all_lines))
        rng = random.Random(f"{seed}:{module}")
        sites: dict[tuple[int, str | None], list[Mutant]] = {}
        for m in mutants_by_module[module]:
            sites.setdefault((m.line, m.function), []).append(m)
        order = list(sites.values())
        rng.shuffle(order)
        for group in order:
            rng.shuffle(group)
        picked = []
        while len(picked) < quota and any(order):
            for group in order:
                if group and len(picked) < quota:
                    picked.append(group.pop())
        chosen += sorted(picked, key=lambda m: (m.line, m.operator, m.occurrence))
    return chosen


# --- coverage map ---------------------------------------------------------------------------------


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_files() -> list[Path]:
    return sorted((REPO / "tests").glob("test_*.py"))


def function_lines(path: Path) -> dict[int, str]:
    """Line -> the qualified name of the innermost function whose body holds it.

    A function's `def` line, decorators and defaults run when the enclosing scope does (at import, for a
    module's functions): they belong to that scope, or every test that imports the module would be taken
    to have run every function in it."""
    tree = ast.parse(path.read_text())
    owner: dict[int, str] = {}

    def visit(node, prefix, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                is_function = not isinstance(child, ast.ClassDef)
                if is_function or in_function:
                    for line in range(child.body[0].lineno, (child.end_lineno or child.lineno) + 1):
                        owner[line] = name
                visit(child, name + ".", in_function or is_function)
            else:
                visit(child, prefix, in_function)

    visit(tree, "", False)
    return owner


def collect_coverage(files: list[Path], with_slow: bool) -> dict:
    """Run `files` once under coverage, one context per test; returns {test file: its map entry}."""
    from coverage import CoverageData

    work = Path(tempfile.mkdtemp(prefix="rltune-coverage-"))
    rc = work / "coveragerc"
    rc.write_text(
        "[run]\n"
        f"source = {', '.join(str(REPO / d) for d in SOURCE_DIRS)}\n"
        "parallel = true\n"
        "patch = subprocess\n"
        f"data_file = {work / '.coverage'}\n"
    )
    durations = work / "durations.json"
    env = {
        **os.environ,
        "COVERAGE_RCFILE": str(rc),
        "RLTUNE_MUTATION_DURATIONS": str(durations),
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    marker = [] if with_slow else ["-m", "not slow"]
    cmd = [
        sys.executable,
        "-m",
        "coverage",
        "run",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "mutation_score",
        *marker,
        *[str(f.relative_to(REPO)) for f in files],
    ]
    print(f"coverage map: measuring {len(files)} test files ({'all tiers' if with_slow else 'fast tier'})", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    print("  " + (proc.stdout.strip().splitlines() or ["(no output)"])[-1], flush=True)
    measured = json.loads(durations.read_text())
    passed, slow = measured["durations"], set(measured["slow"])
    # What the test process ran itself, apart from its children: a long-lived child (a grader worker) is
    # measured under the test that started it, though it served every later test.
    in_process: set[tuple[str, str]] = set()
    for file in work.glob(f".coverage.*pid{measured['pid']}.*"):
        part = CoverageData(basename=str(file))
        part.read()
        for measured_file in part.measured_files():
            module = str(Path(measured_file).resolve().relative_to(REPO))
            owners = function_lines(REPO / module)
            in_process |= {(module, owners.get(line) or "<module>") for line in part.lines(measured_file) or []}
    subprocess.run([sys.executable, "-m", "coverage", "combine", "-q"], cwd=work, env=env, check=True)
    data = CoverageData(basename=str(work / ".coverage"))
    data.read()
    entries = {
        str(f.relative_to(REPO)): {"hash": file_hash(f), "durations": {}, "slow": [], "covers": {}, "child_only": {}}
        for f in files
    }
    for nodeid, seconds in passed.items():
        entries[nodeid.split("::")[0]]["durations"][nodeid] = seconds
        if nodeid in slow:
            entries[nodeid.split("::")[0]]["slow"].append(nodeid)
    for measured in data.measured_files():
        module = str(Path(measured).resolve().relative_to(REPO))
        owners = function_lines(REPO / module)
        for line, contexts in data.contexts_by_lineno(measured).items():
            function = owners.get(line)
            for context in contexts:
                nodeid = context.split("|")[0]
                if nodeid not in passed:
                    continue  # only tests that passed unmutated can tell a mutant apart
                covers = entries[nodeid.split("::")[0]]["covers"].setdefault(module, {})
                covers.setdefault(function or "<module>", set()).add(nodeid)
    child_only: dict[str, set[str]] = {}
    for entry in entries.values():
        for module, functions in entry["covers"].items():
            child_only.setdefault(module, set()).update(f for f in functions if (module, f) not in in_process)
    for entry in entries.values():
        entry["covers"] = {m: {f: sorted(t) for f, t in fs.items()} for m, fs in entry["covers"].items()}
        entry["child_only"] = {m: sorted(fs) for m, fs in child_only.items() if fs}
    return entries


def coverage_map(recollect: bool, with_slow: bool) -> dict:
    path = STATE_DIR / f"coverage-{'all' if with_slow else 'fast'}.json"
    saved = json.loads(path.read_text()) if path.exists() and not recollect else {}
    current = {str(f.relative_to(REPO)): f for f in test_files()}
    saved = {k: v for k, v in saved.items() if k in current}
    stale = [f for k, f in current.items() if saved.get(k, {}).get("hash") != file_hash(f)]
    if stale:
        saved.update(collect_coverage(stale, with_slow))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved))
    return saved


# pytest plugin half: loaded with `-p mutation_score` during the coverage run.

_durations: dict[str, float] = {}
_not_passed: set[str] = set()
_slow: set[str] = set()


def pytest_runtest_setup(item):
    from coverage import Coverage

    if item.get_closest_marker("slow"):
        _slow.add(item.nodeid)

    cov = Coverage.current()
    if cov is not None:
        cov.switch_context(item.nodeid)
        if "COVERAGE_PROCESS_CONFIG" in os.environ:  # child processes measure under this test's name
            config = copy.copy(cov.config)
            config.context = item.nodeid
            os.environ["COVERAGE_PROCESS_CONFIG"] = config.serialize()


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.outcome != "passed":
        _not_passed.add(report.nodeid)


def pytest_sessionfinish(session):
    out = os.environ.get("RLTUNE_MUTATION_DURATIONS")
    if out:
        passed = {k: v for k, v in _durations.items() if k not in _not_passed}
        Path(out).write_text(json.dumps({"durations": passed, "slow": sorted(_slow & set(passed)), "pid": os.getpid()}))


# --- running mutants ------------------------------------------------------------------------------


def tests_for(mutant: Mutant, cmap: dict, budget_s: float) -> tuple[list[str], float, int]:
    """The tests to run on a mutant, their measured seconds, and how many covering tests were left out.

    Covering tests: those that executed the mutated function (for a mutant outside any function, those
    that executed any of its module), and the module's own test file (tests/test_grading.py for
    eval/grading.py). They are ranked by `relevance_scores` (seen to execute the function, in the own
    file, naming what the mutant touches), the fastest first among equals, and taken up to `budget_s`
    measured seconds (one at least): a widely used function is reached by hundreds of tests, and the first
    failure ends the run anyway. A mutant of code that runs at import (a default, a constant) runs
    IMPORT_TIME_TESTS first: coverage credits import to no test."""
    durations = {t: s for e in cmap.values() for t, s in e["durations"].items()}
    slow = {t for e in cmap.values() for t in e.get("slow", [])}
    by_function: dict[str, set[str]] = {}
    for entry in cmap.values():
        for function, tests in entry["covers"].get(mutant.module, {}).items():
            by_function.setdefault(function, set()).update(tests)
    child_only = {f for e in cmap.values() for f in e.get("child_only", {}).get(mutant.module, [])}
    covering: set[str] = set()
    if mutant.function is not None:
        for name in (mutant.function, *parents(mutant.function)):
            if name in by_function:
                covering = by_function[name]
                break
    elif by_function:
        covering = set().union(*by_function.values())
    attributed = covering
    if mutant.function is not None and (not covering or mutant.function in child_only):
        # Run in child processes only, or not measured at all: a long-lived child (a grader worker) is
        # measured under the test that started it, and one that is killed at the end leaves no data. The
        # tests that call into the module reach it too.
        covering = covering.union(*(t for f, t in by_function.items() if f not in child_only))
    own_file = f"tests/test_{Path(mutant.module).stem}.py"
    # all of it: a test whose child process exits at once (os._exit, a kill) leaves no coverage data
    covering = covering | {t for t in durations if t.startswith(own_file + "::")}
    # the fast tests that reach it; the end-to-end ones only where no fast test does
    covering = covering - slow or covering
    # where the function runs in child processes, attribution misses the tests that reach it through a
    # long-lived worker (killed at the end, never measured): it counts for nothing there
    seen = attributed if mutant.function not in child_only else set()
    relevance = relevance_scores(mutant, covering, own_file, seen)

    def rank(test: str) -> tuple:
        return (-relevance[test], durations.get(test, 0.0), test)

    first = [t for t in IMPORT_TIME_TESTS if t in durations] if mutant.import_time else []
    chosen, spent = first, sum(durations[t] for t in first)
    for test in sorted(covering - set(first), key=rank):
        if chosen and spent + durations.get(test, 0.0) > budget_s:
            break
        chosen.append(test)
        spent += durations.get(test, 0.0)
    return chosen, spent, len(covering - set(first)) - len(chosen) + len(first)


# Names too common to say which test checks a mutant.
COMMON_WORDS = {"self", "None", "True", "False", "return", "else", "elif", "range", "list", "dict", "tuple"}


def relevance_scores(mutant: Mutant, tests: set[str], own_file: str, seen: set[str] = frozenset()) -> dict[str, float]:
    """How squarely each test aims at the mutant: the names it touches (the function, its class, the
    identifiers on the changed lines), each weighted by how few of the tests name it (a name every test
    uses tells nothing), counted twice where the test function's own text names it and once where only its
    file does; being in the module's own test file counts as one more rare name, and so does being `seen`
    to execute the function. A test that checks a function in a child process that coverage does not see
    end (one it kills: a second signal) or in a script it writes (under `accelerate launch`) is found by
    its text."""
    words = set(identifiers(mutant.diff))
    if mutant.function is not None:
        words |= set(mutant.function.split("."))
    words = {w.strip("_") for w in words if len(w.strip("_")) > 3 and w not in COMMON_WORDS}
    texts: dict[str, tuple[str, str]] = {}
    for test in tests:
        file = test.split("::")[0]
        texts[test] = (test_source(file, test.split("::")[-1].split("[")[0]), file_text(file))
    n = max(len(tests), 1)
    weights = {}
    for word in words:
        named_by = sum(word in text for _, text in texts.values())
        if named_by:
            weights[word] = math.log(n / named_by)
    own_weight = max([*weights.values(), math.log(2)])
    scores = {}
    for test, (body, text) in texts.items():
        score = sum(w * (2 if word in body else 1) for word, w in weights.items() if word in text)
        scores[test] = score + own_weight * (test.startswith(own_file + "::") + (test in seen))
    return scores


@functools.cache
def file_text(file: str) -> str:
    return (REPO / file).read_text()


@functools.cache
def test_source(file: str, name: str) -> str:
    """The source of test function `name` in `file` ("" when not found)."""
    for node in ast.walk(ast.parse(file_text(file))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return ast.get_source_segment(file_text(file), node) or ""
    return ""


def parents(qualname: str) -> list[str]:
    parts = qualname.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def identifiers(diff: str) -> set[str]:
    import re

    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", diff))


def tests_hash(tests: list[str]) -> str:
    files = sorted({t.split("::")[0] for t in tests}) + ["tests/conftest.py"]
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode() + (REPO / f).read_bytes())
    h.update("\n".join(tests).encode())
    return h.hexdigest()[:16]


def result_key(source: str, mutant_id: str, tests: list[str]) -> str:
    """A mutant's cached result holds while its module's text, the mutant and the tests it ran are the same."""
    return hashlib.sha256(f"{source}{mutant_id}{tests_hash(tests)}".encode()).hexdigest()


class Workspace:
    """A copy of the tree per worker; a mutant is written into the copy, its tests run there, then undone.

    The tests run in a fork of a server process that imported torch, transformers and pytest once (rltune
    itself is imported after the fork, from the copy): a third of a mutant's cost was that start-up."""

    def __init__(self, demo_assets: Path):
        from mutants import copy_tree

        self.root = Path(tempfile.mkdtemp(prefix="rltune-mutation-"))
        copy_tree(self.root)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(self.root), os.environ.get("PYTHONPATH", "")]),
            "RLTUNE_TEST_DEMO_ASSETS": str(demo_assets),
            # the copy has no ../shared beside it: the benchmark data stays where it is
            "RLTUNE_BENCHDATA": os.environ.get("RLTUNE_BENCHDATA", str(REPO.parent / "shared" / "benchdata")),
        }
        env.pop("COVERAGE_RCFILE", None)
        self.server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            cwd=self.root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, module: str, mutated: str, tests: list[str], timeout: float) -> tuple[str, str]:
        target = self.root / module
        original = target.read_text()
        target.write_text(mutated)
        try:
            self.server.stdin.write(json.dumps({"tests": tests, "timeout": timeout}) + "\n")
            self.server.stdin.flush()
            reply = json.loads(self.server.stdout.readline())
        finally:
            target.write_text(original)
        code, output = reply["code"], reply["output"]
        if code is None:
            return "killed (timeout)", ""
        if code == 0:
            return "survived", ""
        collection_error = any(ln.startswith("ERROR tests/") and " - " in ln for ln in output.splitlines())
        if code in (1, 2, 3) or (code == 4 and ("while loading conftest" in output or collection_error)):
            # a test failed, or a test file or the mutated package would not even import
            lines = output.strip().splitlines() or [""]
            failed = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
            return "killed", (failed or lines[-1:])[0][:200]
        return f"error (pytest exit {code})", output[-1000:]

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait()


def serve() -> int:
    """`--serve`: run test jobs read from stdin, each in a fork with its own process group, a reply a line."""
    import signal

    import datasets  # noqa: F401 - imported once here instead of once per mutant
    import pytest
    import torch  # noqa: F401
    import transformers  # noqa: F401

    sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, os.getcwd())  # the tree copy, as PYTHONPATH has it for child processes
    for line in sys.stdin:
        job = json.loads(line)
        log = Path(tempfile.mkstemp(prefix="mutant-", suffix=".log")[1])
        pid = os.fork()
        if pid == 0:
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", *job["tests"]])
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(int(code))
        deadline = time.monotonic() + job["timeout"]
        code = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.05)
        try:
            os.killpg(pid, signal.SIGKILL)  # what the tests left running (grader workers, a timed-out run)
        except ProcessLookupError:
            pass
        if code is None:
            os.waitpid(pid, 0)
        output = log.read_text(errors="replace")[-4000:]
        log.unlink()
        print(json.dumps({"code": code, "output": output}), flush=True)
    return 0


def demo_assets() -> Path:
    """The tests' warmed-up demo model (a minute of training), built once per unmutated tree: a mutant run
    copies it instead of training it again. Mutants of the warm-up are still run against the tests that
    call it directly."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(str(path).encode() + path.read_bytes())
    folder = STATE_DIR / f"demo-assets-{digest.hexdigest()[:12]}"
    if not (folder / "arithmetic.jsonl").is_file():
        print("warming up the tests' demo model once (a minute)", flush=True)
        code = (
            "import sys; from pathlib import Path; from rltune.demo import write_demo_assets; "
            "write_demo_assets(Path(sys.argv[1]) / 'model', Path(sys.argv[1]) / 'arithmetic.jsonl')"
        )
        subprocess.run([sys.executable, "-c", code, str(folder)], cwd=REPO, check=True, capture_output=True)
    return folder


def killing_test(result: dict) -> str | None:
    """The test that failed on a killed mutant, from its cached result's detail ("FAILED <node id> - ...")."""
    detail = result.get("detail", "") if result.get("outcome") == "killed" else ""
    if not detail.startswith(("FAILED ", "ERROR ")) or "::" not in detail:
        return None
    return detail.split(" ", 1)[1].split(" - ", 1)[0].strip()


def load_equivalents() -> dict[str, str]:
    found = {}
    for line in EQUIVALENT_FILE.read_text().splitlines() if EQUIVALENT_FILE.exists() else []:
        if line.strip() and not line.startswith("#"):
            mutant_id, _, reason = line.partition(" ")
            found[mutant_id] = reason.strip()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=440, help="mutants in all, shared out by module lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modules", nargs="+", help="only these modules (paths), with their share of the sample")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once")
    parser.add_argument(
        "--budget",
        type=float,
        default=10.0,
        help="measured seconds of covering tests run per mutant (the most relevant first)",
    )
    parser.add_argument(
        "--survivor-budget",
        type=float,
        default=90.0,
        help="a mutant that survives its budget's tests while covering tests were left out runs "
        "again with this many measured seconds of them",
    )
    parser.add_argument(
        "--with-slow",
        action="store_true",
        help="map the end-to-end tier too (a mutant runs them where no fast test reaches it)",
    )
    parser.add_argument("--recollect", action="store_true", help="measure the coverage of every test file again")
    parser.add_argument("--show", choices=["survived", "killed", "equivalent", "all"], help="print diffs and exit")
    parser.add_argument("--min-score", type=float, default=90.0, help="exit 1 below this overall score")
    parser.add_argument("--report", action="store_true", help="report the cached results, run nothing")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()

    ops = operators()
    by_module = {str(p.relative_to(REPO)): enumerate_mutants(p, ops) for p in source_files()}
    chosen = sample(by_module, args.sample, args.seed)
    if args.modules:
        wanted = {str(Path(m)) for m in args.modules}
        chosen = [m for m in chosen if m.module in wanted]
    sources = {m: (REPO / m).read_text() for m in {c.module for c in chosen}}
    runnable = []
    for m in chosen:
        mutated = m.apply(sources[m.module], ops)
        if mutated is not None and mutated != sources[m.module] and compiles(mutated):
            runnable.append((describe(m, sources[m.module], mutated), mutated))
    seen: dict[str, int] = {}
    for m, _ in runnable:  # the same change at two places of one function (one keyword dropped from two calls)
        seen[m.id] = seen.get(m.id, 0) + 1
        if seen[m.id] > 1:
            m.id += f"#{seen[m.id]}"
    equivalents = load_equivalents()
    equivalents.update({m.id: m.equivalent for m, _ in runnable if m.equivalent})

    cache_path = STATE_DIR / "results.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    if args.show:
        for m, _ in runnable:
            result = cache.get(m.id, {}).get("outcome", "not run")
            kind = "equivalent" if m.id in equivalents else result.split(" ")[0]
            if args.show in (kind, "all"):
                tests = cache.get(m.id, {}).get("tests", "?")
                print(f"{result:>18}  {m.id}  (line {m.line}, {tests} tests)\n    " + m.diff.replace("\n", "\n    "))
        return 0

    if args.report:
        known = {m.id: cache[m.id] for m, _ in runnable if m.id in cache and m.id not in equivalents}
        print(f"{len(runnable)} mutants sampled, {len(known)} with results (not checked against changed tests)")
        return report(runnable, known, equivalents, args.min_score)
    cmap = coverage_map(args.recollect, with_slow=args.with_slow)
    durations = {t: s for e in cmap.values() for t, s in e["durations"].items()}
    lock = threading.Lock()
    assets = demo_assets()
    workspaces = [Workspace(assets) for _ in range(args.jobs)]
    free = list(workspaces)
    results: dict[str, dict] = {}
    todo = []
    for m, mutated in runnable:
        if m.id in equivalents:
            continue
        # Two rounds: the budget's tests, then, for a survivor with covering tests left out, more of them.
        rounds = []
        for budget in (args.budget, args.survivor_budget):
            tests, seconds, left_out = tests_for(m, cmap, budget)
            if not rounds or tests != rounds[0][0]:
                rounds.append((tests, seconds, left_out, result_key(sources[m.module], m.id, tests)))
        cached = cache.get(m.id, {})
        killer = killing_test(cached)
        if killer in durations and [killer] != rounds[0][0]:
            # killed before: its killing test alone, run first, settles it again in seconds (a kill is a kill
            # whatever else would have run); where it no longer kills, the usual rounds follow
            rounds.insert(0, ([killer], durations[killer], 0, result_key(sources[m.module], m.id, [killer])))
        # a timeout or an error is run again: a machine busy with something else, a since fixed harness
        usable = cached.get("outcome") not in ("killed (timeout)", None) and not cached["outcome"].startswith("error")
        final = cached.get("key") == rounds[-1][3] or (
            cached.get("outcome", "").startswith("killed") and cached.get("key") in {r[3] for r in rounds}
        )
        if usable and final:
            results[m.id] = cached
        elif not rounds[0][0]:
            results[m.id] = {"key": rounds[0][3], "outcome": "survived (no test runs it)", "tests": 0, "seconds": 0.0}
        elif usable and cached.get("key") == rounds[0][3] and len(rounds) > 1:
            todo.append((m, mutated, rounds[1:]))  # survived the first round already
        else:
            todo.append((m, mutated, rounds))
    print(
        f"{len(runnable)} mutants sampled ({sum(m.id in equivalents for m, _ in runnable)} equivalent), "
        f"{len(results)} known, {len(todo)} to run",
        flush=True,
    )

    def run_one(job):
        m, mutated, rounds = job
        with lock:
            ws = free.pop()
        started = time.perf_counter()
        try:
            for current in rounds:
                tests, seconds, left_out, key = current
                outcome, detail = ws.run(m.module, mutated, tests, timeout=3 * seconds + STARTUP_S)
                if not outcome.startswith("survived"):
                    break
        finally:
            with lock:
                free.append(ws)
        entry = {
            "key": key,
            "outcome": outcome,
            "detail": detail,
            "tests": len(tests),
            "left_out": left_out,
            "seconds": round(time.perf_counter() - started, 1),
            "module": m.module,
            "diff": m.diff,
        }
        with lock:
            results[m.id] = entry
            cache[m.id] = entry
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps(cache, indent=1))
            print(
                f"{len(results):4d}/{len(runnable)} {outcome:>18} {entry['seconds']:6.1f}s "
                f"{len(tests):4d} of {len(tests) + left_out:4d} tests  {m.id}",
                flush=True,
            )

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run_one, todo))
    for ws in workspaces:
        ws.close()

    return report(runnable, results, equivalents, args.min_score)


def report(runnable, results, equivalents, min_score) -> int:
    rows: dict[str, list[int]] = {}
    for m, _ in runnable:
        if m.id in equivalents or m.id not in results:
            continue
        outcome = results[m.id]["outcome"]
        row = rows.setdefault(m.module, [0, 0, 0])
        row[0] += outcome.startswith("killed")
        row[1] += outcome.startswith("survived")
        row[2] += outcome.startswith("error")
    print(f"\n{'module':40} {'killed':>6} {'survived':>8} {'error':>5} {'score':>6}")
    for module, (k, s, e) in sorted(rows.items()):
        print(f"{module:40} {k:6d} {s:8d} {e:5d} {100 * k / max(k + s, 1):5.1f}%")
    killed = sum(r[0] for r in rows.values())
    survived = sum(r[1] for r in rows.values())
    errors = sum(r[2] for r in rows.values())
    n_equivalent = sum(m.id in equivalents for m, _ in runnable)
    score = 100 * killed / max(killed + survived, 1)
    print(
        f"\n{killed} killed, {survived} survived, {errors} errors, {n_equivalent} equivalent: "
        f"mutation score {score:.1f}% of {killed + survived} non-equivalent mutants"
    )
    summary = {
        "killed": killed,
        "survived": survived,
        "errors": errors,
        "equivalent": n_equivalent,
        "score": score,
        "modules": rows,
    }
    (STATE_DIR / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0 if score >= min_score and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
