"""What the pass@k plot draws: each run's curve in percent, its CI band from the run's seed, a legend naming
n, T and the problem count, one panel per benchmark; and how a missing results file is reported."""

from __future__ import annotations

import json
from math import comb as math_comb

import pytest

import rltune.eval.plots as plots
from rltune.errors import RLTuneError


def results(seed: int, n: int, corrects: dict[str, list[int]]) -> dict:
    settings = {"n": n, "temperature": 0.6, "seed": seed}
    benchmarks = {
        name: {"problems": [{"question": f"q{i}", "n": n, "correct": c} for i, c in enumerate(cs)]}
        for name, cs in corrects.items()
    }
    return {"settings": settings, "benchmarks": benchmarks}


@pytest.fixture
def drawn(monkeypatch):
    figures = []
    finish = plots._finish
    monkeypatch.setattr(plots, "_finish", lambda fig, axes, out: (figures.append(fig), finish(fig, axes, out))[1])
    return figures


def test_the_pass_at_k_plot_draws_each_run_in_percent_with_its_band(tmp_path, drawn):
    a = results(3, 4, {"gsm8k": [0, 1, 4, 2, 3, 0, 1], "math": [1, 0, 0]})
    b = results(3, 4, {"gsm8k": [4, 4, 0, 2, 1, 0, 3]})
    out = plots.plot_pass_at_k([("a", a), ("b", b)], tmp_path / "new" / "folder" / "pass.png")
    assert out.is_file() and out.stat().st_size > 1000
    (fig,) = drawn
    assert [ax.get_title() for ax in fig.axes] == ["gsm8k", "math"]
    assert fig.get_size_inches()[0] == pytest.approx(9.0)  # 4.5 inches a panel
    gsm8k, math = fig.axes
    assert len(gsm8k.lines) == 4 and len(math.lines) == 2  # each run's pass@k and pass^k; b has no math results
    for (at_k, hat_k), run in zip(zip(gsm8k.lines[::2], gsm8k.lines[1::2]), (a, b)):
        problems = run["benchmarks"]["gsm8k"]["problems"]
        ks, values = plots.pass_at_k_curve(problems, 4)
        assert list(at_k.get_xdata()) == ks == [1, 2, 4]
        assert list(at_k.get_ydata()) == pytest.approx([100 * v for v in values])
        # pass^k: every one of k samples right, exactly C(c, k) / C(n, k) per problem
        reliable = [sum(math_comb(p["correct"], k) / math_comb(4, k) for p in problems) / len(problems) for k in ks]
        assert list(hat_k.get_ydata()) == pytest.approx([100 * v for v in reliable])
        assert hat_k.get_linestyle() == "--" and hat_k.get_color() == at_k.get_color()
    legends = [t.get_text() for t in gsm8k.get_legend().get_texts()]
    assert legends == ["a (n=4, T=0.6, 7 problems)", "a pass^k", "b (n=4, T=0.6, 7 problems)", "b pass^k"]
    # the band spans the bootstrap CI drawn with the run's seed
    band = gsm8k.collections[0].get_paths()[0].vertices[:, 1]
    bands = plots.pass_at_k_bands(a["benchmarks"]["gsm8k"]["problems"], 4, seed=3)
    assert band.min() == pytest.approx(100 * min(lo for lo, _ in bands))
    assert band.max() == pytest.approx(100 * max(hi for _, hi in bands))
    assert [t.get_text() for t in gsm8k.get_xticklabels()] == ["1", "2", "4"]
    plots.plot_pass_at_k([("b", b), ("a", a)], tmp_path / "reversed.png")  # the run without math comes first
    assert [len(ax.lines) for ax in drawn[1].axes] == [4, 2]


def test_the_bands_depend_on_the_seed_and_bracket_the_curve():
    problems = results(0, 8, {"x": [0, 1, 2, 5, 8, 3, 0, 7, 1, 2, 6, 4]})["benchmarks"]["x"]["problems"]
    _, curve = plots.pass_at_k_curve(problems, 8)
    for seed in (0, 1):
        bands = plots.pass_at_k_bands(problems, 8, seed=seed)
        assert all(lo <= v <= hi for (lo, hi), v in zip(bands, curve))
    assert plots.pass_at_k_bands(problems, 8, seed=0) != plots.pass_at_k_bands(problems, 8, seed=1)


def test_loading_results_names_what_is_missing(tmp_path):
    with pytest.raises(RLTuneError, match="no results.json there"):
        plots.load_results(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results(0, 2, {"x": [1]})))
    assert plots.load_results(run) == plots.load_results(run / "results.json") == results(0, 2, {"x": [1]})


def test_the_breakdown_plot_draws_each_runs_mean_per_value_with_its_ci(tmp_path, drawn):
    def run(means: dict[str, float]) -> dict:
        by = {"level": {v: {"problems": 3, "mean@4": m, "mean@4_ci": (m - 0.1, m + 0.05)} for v, m in means.items()}}
        return {"settings": {"n": 4}, "benchmarks": {"math500": {"metrics": {"by": by}}}}

    a, b = run({"1": 0.9, "2": 0.5, "10": 0.1}), run({"1": 0.7, "10": 0.2})
    out = plots.plot_breakdowns([("a", a), ("b", b)], tmp_path / "by.png")
    assert out.is_file() and out.stat().st_size > 1000
    (fig,) = drawn
    (ax,) = fig.axes
    assert ax.get_title() == "math500 by level"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "10"]
    bars = [patch.get_height() for patch in ax.patches]
    assert bars == pytest.approx([90, 50, 10, 70, 20])  # b has no level 2
    errorbars = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(errorbars) == 2
    for container, means in zip(errorbars, ([90, 50, 10], [70, 20])):  # the CI: 10 below the mean, 5 above
        spans = [y for seg in container.lines[2][0].get_segments() for y in (seg[0][1], seg[1][1])]
        assert spans == pytest.approx([y for m in means for y in (m - 10, m + 5)])
    assert (
        plots.plot_breakdowns(
            [("a", results(0, 4, {"x": [1]}) | {"benchmarks": {"x": {"metrics": {}}}})], tmp_path / "none.png"
        )
        is None
    )


def test_compared_runs_name_each_setting_and_problem_set_that_differs():
    def run(questions: dict[str, list[str]], **settings) -> dict:
        base = {key: 1 for key in plots.COMPARED_SETTINGS}
        problems = {name: {"problems": [{"question": q} for q in qs]} for name, qs in questions.items()}
        return {"settings": {**base, **settings}, "benchmarks": problems}

    a = run({"gsm8k": ["q1", "q2"], "aime24": ["p1"]})
    assert plots.run_differences([("a", a), ("b", run({"gsm8k": ["q1", "q2"], "aime24": ["p1"]}))]) == []
    for key in plots.COMPARED_SETTINGS:  # every setting the comparison promises to check
        other = run({"gsm8k": ["q1", "q2"]}, **{key: 2})
        assert plots.run_differences([("a", a), ("b", other)]) == [f"{key} (a: 1, b: 2)"]
    fewer = run({"gsm8k": ["q1"], "aime24": ["p1"]})
    assert plots.run_differences([("a", a), ("b", fewer)]) == [
        "the gsm8k problems (a: 2, b: 1 problems, not the same questions)"
    ]
    reordered = run({"gsm8k": ["q2", "q1"], "aime24": ["p1"]})
    assert plots.run_differences([("a", a), ("b", reordered)]) == [
        "the gsm8k problems (a: 2, b: 2 problems, not the same questions)"
    ]
    only_here = run({"gsm8k": ["q1", "q2"], "math500": ["m1"]})  # a benchmark one run lacks is not a difference
    assert plots.run_differences([("a", a), ("b", only_here)]) == []
