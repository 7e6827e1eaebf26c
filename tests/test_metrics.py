import itertools
import math

import pytest

from rltune.eval.grading import equivalent
from rltune.eval.metrics import (
    answer_classes,
    bootstrap_ci,
    length_statistics,
    maj_at_k,
    majority_is_correct,
    mean_at_n,
    pass_at_k,
    pass_hat_k,
)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that hold at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_hat_k_equals_enumeration(n):
    """pass^k: the share of all k-subsets of the n samples (c correct) whose samples are all correct."""
    for c in range(n + 1):
        samples = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(range(n), k))
            expected = sum(all(samples[i] for i in s) for s in subsets) / len(subsets)
            assert pass_hat_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_hat_k(16, 4, 1) == pass_at_k(16, 4, 1) == 0.25  # k = 1: the two agree
    assert 0 < pass_hat_k(4096, 4000, 2048) < 1e-20  # no overflow where the binomials would
    with pytest.raises(ValueError):
        pass_hat_k(4, 1, 5)


def test_length_statistics_by_nearest_rank():
    stats = length_statistics(list(range(1, 101)), [i >= 95 for i in range(100)])
    assert stats == {"samples": 100, "mean": 50.5, "p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0,
                     "truncated_fraction": 0.05}  # fmt: skip
    assert length_statistics([7], [True])["p50"] == length_statistics([7], [True])["p99"] == 7.0
    assert length_statistics([], [])["samples"] == 0


def test_pass_at_k_properties():
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 6, 5) == 1.0
    assert pass_at_k(1024, 3, 64) == pytest.approx(1 - math.comb(1021, 64) / math.comb(1024, 64))
    value = pass_at_k(4096, 7, 2048)  # comb-based division overflows floats here
    assert 0 < value <= 1 and math.isfinite(value)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_mean_at_n():
    assert mean_at_n([True, False, False, True]) == 0.5


def test_maj_votes_by_equivalence_not_strings():
    # 1/2 appears as three different strings; 7 appears twice. String voting would pick 7.
    answers = ["7", "\\frac{1}{2}", "0.5", "7", "1/2", None]
    correct = [False, True, True, False, True, False]
    assert answer_classes(answers, equivalent) == [[0, 3], [1, 2, 4]]
    assert maj_at_k(answers, correct, 6, equivalent) is True
    assert maj_at_k(answers, correct, 4, equivalent) is False  # tie 2-2: the class seen first wins
    classes = answer_classes(answers, equivalent)  # one grouping, cut at each k, gives the same votes
    assert [majority_is_correct(classes, correct, k) for k in range(1, 7)] == [
        maj_at_k(answers, correct, k, equivalent) for k in range(1, 7)
    ]


def test_maj_with_no_answers_is_wrong():
    assert maj_at_k([None, None], [False, False], 2, equivalent) is False


def test_bootstrap_ci_brackets_the_mean():
    values = [0.0] * 30 + [1.0] * 70
    lo, hi = bootstrap_ci(values, resamples=2000, seed=1)
    assert lo < 0.7 < hi and 0.55 < lo and hi < 0.85
    assert bootstrap_ci([0.5] * 10) == (0.5, 0.5)


def _results(pass1: float, passk: float, ci: tuple[float, float]) -> dict:
    return {"benchmarks": {"math": {"metrics": {"pass@1": pass1, "pass@8": passk, "pass@8_ci": list(ci)}}}}


def test_pass_at_k_collapse_alarm_on_recorded_results(caplog):
    from rltune.eval.hook import collapse_alarms

    first = _results(0.30, 0.90, (0.84, 0.96))  # CI half-width 0.06
    key = "eval/math/alarm_pass_at_k_collapse"
    assert collapse_alarms(first, _results(0.50, 0.80, (0.7, 0.9)), 40) == {key: 1.0}
    assert "pass@8 fell 0.900 -> 0.800" in caplog.text and "step 40" in caplog.text
    assert collapse_alarms(first, _results(0.50, 0.86, (0.8, 0.9)), 40) == {key: 0.0}  # within the CI
    assert collapse_alarms(first, _results(0.25, 0.70, (0.6, 0.8)), 40) == {key: 0.0}  # pass@1 fell too
    assert collapse_alarms(first, first, 0) == {key: 0.0}
    single_k = {"benchmarks": {"math": {"metrics": {"pass@1": 0.5}}}}
    assert collapse_alarms(single_k, single_k, 0) == {}


def test_the_alarm_goes_on_past_a_benchmark_without_a_baseline():
    from rltune.eval.hook import collapse_alarms

    first = {"benchmarks": {"math": _results(0.30, 0.90, (0.84, 0.96))["benchmarks"]["math"]}}
    now = {
        "benchmarks": {
            "new": _results(0.5, 0.5, (0.4, 0.6))["benchmarks"]["math"],
            "math": _results(0.50, 0.80, (0.7, 0.9))["benchmarks"]["math"],
        }
    }
    assert collapse_alarms(first, now, 3) == {"eval/math/alarm_pass_at_k_collapse": 1.0}


def test_periodic_eval_alarms_against_the_first_eval_not_the_previous(tmp_path, demo_assets, monkeypatch):
    """pass@8 slides 0.90 -> 0.87 -> 0.83 while pass@1 rises: no step falls beyond the previous eval's CI,
    the third falls beyond the first's."""
    from test_trainer import recipe

    import rltune.eval.hook as hook
    from rltune.eval.runner import EvalSettings
    from rltune.trainer import Trainer

    settings = vars(EvalSettings(benchmarks=["math"], n=8, k=[1, 8]))

    def recorded(p1, p8, ci):  # what evaluate returns, with the numbers the alarm reads set
        metrics = {
            "problems": 10,
            "mean@8": p1,
            "mean@8_ci": [p1, p1],
            "pass@1": p1,
            "pass@8": p8,
            "pass@8_ci": ci,
            "maj@1": p1,
            "maj@8": p1,
            "distinct_answers": 2.0,
            "no_answer_fraction": 0.0,
            "seconds": 1.0,
        }
        return {"settings": settings, "model": "m", "benchmarks": {"math": {"metrics": metrics, "problems": []}}}

    evals = iter(
        [recorded(0.30, 0.90, [0.85, 0.95]), recorded(0.35, 0.87, [0.70, 1.0]), recorded(0.40, 0.83, [0.70, 1.0])]
    )
    monkeypatch.setattr(hook, "evaluate", lambda *args, **kwargs: next(evals))
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1}))
    try:
        periodic = hook.PeriodicEval(trainer.cfg)
        key = "eval/math/alarm_pass_at_k_collapse"
        assert [periodic.run(trainer, step)[key] for step in (0, 10, 20)] == [0.0, 0.0, 1.0]
        assert (tmp_path / "run" / "eval" / "step-20.json").is_file()
    finally:
        trainer.close()


def test_periodic_eval_takes_every_setting_from_the_recipe(tmp_path, demo_assets):
    from test_trainer import recipe

    from rltune.eval.hook import PeriodicEval

    cfg = recipe(
        tmp_path, *demo_assets,
        eval={"every": 5, "benchmarks": ["math500"], "data_dir": "/data", "n": 3, "k": [1, 3], "limit": 7,
              "temperature": 0.9, "top_p": 0.7, "max_tokens": 33, "instruction": "Q: {question}"},
        data={"system_prompt": "Be brief.", "use_chat_template": False}, train={"seed": 4},
    )  # fmt: skip
    s = PeriodicEval(cfg).settings
    assert (s.benchmarks, s.data_dir, s.n, s.k, s.limit) == (["math500"], "/data", 3, [1, 3], 7)
    assert (s.temperature, s.top_p, s.max_tokens, s.instruction) == (0.9, 0.7, 33, "Q: {question}")
    assert (s.system_prompt, s.use_chat_template, s.seed) == ("Be brief.", False, 4)
    unset = PeriodicEval(recipe(tmp_path / "b", *demo_assets, eval={"every": 5})).settings
    assert unset.max_tokens == cfg.rollout.max_tokens and unset.instruction == cfg.data.instruction


def test_the_step_line_puts_the_total_reward_first_then_the_components_by_name():
    from rltune.metrics import step_line

    metrics = {"reward/format": 0.2, "reward/total": 0.75, "reward/accuracy": 0.5, "reward/total_std": 0.1,
               "reward/errors": 0.0, "loss": 0.0123, "kl": 0.001, "reward/my_reward/errors": 2.0}  # fmt: skip
    line = step_line(3, 10, metrics, 2.0)
    assert line == ("step 3/10 total=0.75 accuracy=0.5 format=0.2 my_reward.errors=2 loss=0.0123 kl=0.001 "
                    "2.0s/step eta 0m14s")  # fmt: skip
    assert step_line(3, 10, {"reward/total": 1.0}, None) == "step 3/10 total=1"


def test_an_mlflow_store_that_will_not_open_stops_before_any_model_loads(tmp_path, monkeypatch):
    """MLflow 3 refuses a folder of files unless MLFLOW_ALLOW_FILE_STORE=true: said when the trackers are set
    up, with what to set, instead of once training has started."""
    pytest.importorskip("mlflow")
    from rltune.config import TrainConfig
    from rltune.errors import ConfigError
    from rltune.metrics import tracker_options

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    train = TrainConfig(report_to=["mlflow"], output_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="set MLFLOW_ALLOW_FILE_STORE=true"):
        tracker_options(train)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert tracker_options(train)["log_with"] == ["mlflow"]


def test_rewards_are_logged_per_data_source_when_the_rows_name_one():
    import torch
    from accelerate import Accelerator

    from rltune.batch import RolloutBatch
    from rltune.metrics import source_metrics

    rows = [{"data_source": "gsm8k"}, {"data_source": "math"}, {"data_source": "gsm8k"}]
    groups = [0, 0, 1, 1, 2, 2]
    batch = RolloutBatch([[1]] * 6, [[2]] * 6, [""] * 6, [[0.0]] * 6, ["stop"] * 6, groups, rows)
    batch.rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    metrics = source_metrics(batch, "data_source", Accelerator(cpu=True))
    assert metrics == {"reward/source/gsm8k": 0.75, "reward/source/math": 0.5}
    assert source_metrics(batch, None, Accelerator(cpu=True)) == {}
    assert source_metrics(batch, "split", Accelerator(cpu=True)) == {}  # a column the rows do not have


def test_episode_metrics_count_model_turns_observation_tokens_and_environment_counters():
    from rltune.batch import RolloutBatch
    from rltune.metrics import episode_metrics

    # sample 0: model (3 tokens), tool (2), model (1); sample 1: one model turn of 4 tokens, no tool
    batch = RolloutBatch([[1], [1]], [[5] * 6, [6] * 4], ["a", "b"], [[0.0] * 6, [0.0] * 4], ["stop"] * 2, [0, 0], [{}])
    batch.model_masks = [[1, 1, 1, 0, 0, 1], [1, 1, 1, 1]]
    batch.turns = [
        [
            {"role": "assistant", "content": "x"},
            {"role": "tool", "content": "y"},
            {"role": "assistant", "content": "z"},
        ],
        [{"role": "assistant", "content": "w"}],
    ]
    batch.episode_stats = [{"tool_calls": 1.0, "tool_errors": 1.0}, {"tool_calls": 0.0}]
    assert episode_metrics(batch) == {
        "episode/turns_mean": 1.5,
        "episode/turns_max": 2.0,
        "episode/observation_tokens_mean": 1.0,  # 2 observation tokens over 2 samples
        "episode/turn_length_mean": 8 / 3,  # model tokens per model turn
        "env/tool_calls": 0.5,
        "env/tool_errors": 0.5,  # a counter one sample lacks counts 0 there
    }


def test_closing_the_training_metrics_logger_closes_its_file_and_finishes_each_tracker(tmp_path):
    """rltune.metrics.MetricsLogger.close on the main process: metrics.jsonl closed (a sweep runs many trainers
    in one process) and every tracker finished; on another process, which owns no file, it does nothing."""
    from accelerate import Accelerator
    from accelerate.tracking import GeneralTracker

    from rltune.config import RecipeConfig
    from rltune.metrics import MetricsLogger

    class Tracker(GeneralTracker):
        name, requires_logging_directory, main_process_only = "recording", False, True

        def __init__(self):
            super().__init__()
            self.finished = 0

        @property
        def tracker(self):
            return self

        def finish(self):
            self.finished += 1

    cfg = RecipeConfig()
    cfg.train.report_to = []
    accelerator = Accelerator(cpu=True)
    tracker = Tracker()
    accelerator.trackers.append(tracker)
    logger = MetricsLogger(tmp_path / "run", accelerator, cfg)
    logger.log(1, {"loss": 0.5})
    logger.close()
    assert logger.jsonl.closed and tracker.finished == 1
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1

    class OtherProcess:
        is_main_process, trackers = False, [tracker]

    other = MetricsLogger(tmp_path / "other", OtherProcess(), cfg)
    other.close()
    assert tracker.finished == 1 and not (tmp_path / "other").exists()
