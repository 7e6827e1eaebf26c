"""What the pass@k plot draws: each run's curve in percent, its CI band from the run's seed, a legend naming
n, T and the problem count, one panel per benchmark; and how a missing results file is reported."""

from __future__ import annotations

import json

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
    assert len(gsm8k.lines) == 2 and len(math.lines) == 1  # run b has no math results
    for line, run in zip(gsm8k.lines, (a, b)):
        problems = run["benchmarks"]["gsm8k"]["problems"]
        ks, values = plots.pass_at_k_curve(problems, 4)
        assert list(line.get_xdata()) == ks == [1, 2, 4]
        assert list(line.get_ydata()) == pytest.approx([100 * v for v in values])
    legends = [t.get_text() for t in gsm8k.get_legend().get_texts()]
    assert legends == ["a (n=4, T=0.6, 7 problems)", "b (n=4, T=0.6, 7 problems)"]
    # the band spans the bootstrap CI drawn with the run's seed
    band = gsm8k.collections[0].get_paths()[0].vertices[:, 1]
    bands = plots.pass_at_k_bands(a["benchmarks"]["gsm8k"]["problems"], 4, seed=3)
    assert band.min() == pytest.approx(100 * min(lo for lo, _ in bands))
    assert band.max() == pytest.approx(100 * max(hi for _, hi in bands))
    assert [t.get_text() for t in gsm8k.get_xticklabels()] == ["1", "2", "4"]


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
