"""tests/mutation_score.py's own choices, on small made-up modules and maps: which function a covered line
belongs to, which covering tests a mutant runs first, and which test killed a cached mutant."""

import mutation_score as ms
import pytest


def test_a_functions_def_line_and_defaults_belong_to_the_enclosing_scope(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import functools\n"  # 1
        "@functools.cache\n"  # 2
        "def f(x=1 + 2):\n"  # 3
        "    return x\n"  # 4
        "class C:\n"  # 5
        "    def g(self,\n"  # 6
        "          y=3):\n"  # 7
        "        return y\n"  # 8
        "    def h(self): return 0\n"  # 9: a one-line body is on its def line
    )
    owners = ms.function_lines(module)
    # lines run at import (decorator, def, defaults, class body) belong to no function
    assert [owners.get(line) for line in (1, 2, 3, 5, 6, 7)] == [None] * 6
    assert owners[4] == "f" and owners[8] == "C.g" and owners[9] == "C.h"


def mutant(diff: str, function: str | None, module: str = "rltune/metrics.py") -> ms.Mutant:
    return ms.Mutant(module, "Op", 0, 1, function, False, diff=diff)


def coverage_entry(durations: dict[str, float], covers: dict[str, list[str]], module="rltune/metrics.py") -> dict:
    return {"durations": durations, "slow": [], "covers": {module: covers}, "child_only": {}}


@pytest.fixture
def test_tree(tmp_path, monkeypatch):
    """A stand-in repository whose tests/ the test writes (the tool caches what it reads from them)."""
    monkeypatch.setattr(ms, "REPO", tmp_path)
    (tmp_path / "tests").mkdir()
    ms.file_text.cache_clear()
    ms.test_source.cache_clear()
    yield tmp_path / "tests"
    ms.file_text.cache_clear()
    ms.test_source.cache_clear()


def test_the_tests_that_name_what_a_mutant_touches_run_first_within_the_budget(test_tree):
    # every training test reaches reduce_over_processes; the one test that checks it over two processes (in a
    # script the test writes) is the slowest: it goes first, and alone fills the budget
    (test_tree / "test_training.py").write_text(
        "def test_resume():\n    train()\n\n\ndef test_nan_rewards():\n    train()\n"
    )
    (test_tree / "test_distributed.py").write_text(
        'SCRIPT = "from rltune.metrics import reduce_over_processes"\n\n\n'
        "def test_two_processes():\n    launch(SCRIPT)\n"
    )
    training = ["tests/test_training.py::test_resume", "tests/test_training.py::test_nan_rewards"]
    distributed = "tests/test_distributed.py::test_two_processes"
    cmap = {
        "tests/test_training.py": coverage_entry(
            dict.fromkeys(training, 1.0), {"reduce_over_processes": training, "step_line": training}
        ),
        "tests/test_distributed.py": coverage_entry(
            {distributed: 10.0}, {"reduce_over_processes": [distributed], "step_line": [distributed]}
        ),
    }
    m = mutant(
        "-    dist.all_reduce(maxima, op=dist.ReduceOp.MAX)\n+    dist.all_reduce(maxima)", "reduce_over_processes"
    )
    chosen, seconds, left_out = ms.tests_for(m, cmap, budget_s=10.0)
    assert chosen == [distributed] and seconds == 10.0 and left_out == 2
    chosen, _, left_out = ms.tests_for(m, cmap, budget_s=12.0)
    assert chosen == [distributed, *sorted(training)] and left_out == 0
    # without a name in common, the fastest go first
    m = mutant("-    x = a + b\n+    x = a - b", "step_line")
    assert ms.tests_for(m, cmap, budget_s=10.0)[0] == sorted(training)


def test_a_test_of_the_modules_own_file_that_names_the_change_goes_before_tests_seen_running_it(test_tree):
    # the second signal's exit runs in a child process the test kills: coverage never sees it run there
    (test_tree / "test_signals.py").write_text('def test_second_signal():\n    assert "again" in run_twice()\n')
    (test_tree / "test_training.py").write_text("def test_resume():\n    train()\n")
    own, training = "tests/test_signals.py::test_second_signal", "tests/test_training.py::test_resume"
    module = "rltune/signals.py"
    cmap = {
        # its process exits at once on the second signal: no coverage data at all
        "tests/test_signals.py": coverage_entry({own: 5.0}, {}, module),
        "tests/test_training.py": coverage_entry({training: 1.0}, {"GracefulStop._handle": [training]}, module),
    }
    m = mutant('-            self._exit_now(f"{name} again")\n+            None', "GracefulStop._handle", module)
    assert ms.tests_for(m, cmap, budget_s=5.0)[0] == [own]


def test_a_name_every_test_uses_tells_nothing_the_test_bodys_own_names_weigh_double_and_the_own_file_counts(
    test_tree,
):
    (test_tree / "test_metrics.py").write_text("def test_log():\n    logger.log()\n")
    (test_tree / "test_trainer.py").write_text(
        "def test_close():\n    logger.log()\n    logger.close()\n\n\ndef test_other():\n    logger.log()\n"
        "\n\n# close\n"
    )
    tests = {
        "tests/test_metrics.py::test_log",
        "tests/test_trainer.py::test_close",
        "tests/test_trainer.py::test_other",
    }
    m = mutant("-        self.logger.log(x)\n+        None", "MetricsLogger.close")
    scores = ms.relevance_scores(m, tests, "tests/test_metrics.py")
    # `log` is in every test: weight 0; `close` is named in test_close's body (twice the weight of a mention in
    # the file only); test_log is in the module's own test file
    assert scores["tests/test_trainer.py::test_close"] == 2 * scores["tests/test_trainer.py::test_other"] > 0
    assert scores["tests/test_metrics.py::test_log"] > 0
    assert ms.relevance_scores(mutant("-    x = 1\n+    x = 2", None), set(), "tests/test_metrics.py") == {}


def test_the_killing_test_is_read_from_a_cached_kill_only():
    failed = "FAILED tests/test_a.py::test_b[x-1] - AssertionError: assert 1 == 2"
    assert ms.killing_test({"outcome": "killed", "detail": failed}) == "tests/test_a.py::test_b[x-1]"
    assert (
        ms.killing_test({"outcome": "killed", "detail": "ERROR tests/test_a.py::test_c"}) == "tests/test_a.py::test_c"
    )
    assert ms.killing_test({"outcome": "survived", "detail": failed}) is None
    assert ms.killing_test({"outcome": "killed (timeout)", "detail": ""}) is None
    assert ms.killing_test({"outcome": "killed", "detail": "E   ImportError: cannot import name"}) is None
