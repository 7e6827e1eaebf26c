"""pass@k curves (pass^k beside them): one panel per benchmark, k on a log axis, one line per run; breakdowns:
one panel per benchmark and breakdown, mean@n per value with its CI, one bar per run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rltune.errors import RLTuneError
from rltune.eval.metrics import bootstrap_ci, pass_at_k, pass_hat_k


def curve_ks(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def _per_problem(problems: list[dict[str, Any]], k: int, estimator=pass_at_k) -> list[float]:
    return [estimator(p["n"], p["correct"], k) for p in problems]


def pass_at_k_curve(problems: list[dict[str, Any]], n: int, estimator=pass_at_k) -> tuple[list[int], list[float]]:
    """pass@k (or with `estimator=pass_hat_k`, pass^k) at each k of `curve_ks(n)`."""
    ks = curve_ks(n)
    return ks, [sum(_per_problem(problems, k, estimator)) / len(problems) for k in ks]


def pass_at_k_bands(problems: list[dict[str, Any]], n: int, seed: int = 0) -> list[tuple[float, float]]:
    """The 95% bootstrap CI over problems of each point of `pass_at_k_curve`."""
    return [bootstrap_ci(_per_problem(problems, k), seed=seed) for k in curve_ks(n)]


COMPARED_SETTINGS = (
    "n", "temperature", "top_p", "max_tokens", "instruction", "use_chat_template", "system_prompt", "answer_fallback"
)  # fmt: skip
"""Settings two runs must share for their pass@k curves to be compared: sampling, the prompt's format and how
answers are graded (the seed may differ: other draws of the same distribution)."""


def run_differences(runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """What differs between eval runs beyond the model: sampling settings, and the problems of a benchmark
    they share (by count and by question)."""
    differences = []
    for key in COMPARED_SETTINGS:
        values = {label: results["settings"].get(key) for label, results in runs}
        if len(set(map(json.dumps, values.values()))) > 1:
            differences.append(f"{key} ({', '.join(f'{label}: {v}' for label, v in values.items())})")
    for name in sorted({b for _, results in runs for b in results["benchmarks"]}):
        sets = {
            label: [p["question"] for p in results["benchmarks"][name]["problems"]]
            for label, results in runs
            if name in results["benchmarks"]
        }
        if len(sets) > 1 and len({json.dumps(q) for q in sets.values()}) > 1:
            counts = ", ".join(f"{label}: {len(q)}" for label, q in sets.items())
            differences.append(f"the {name} problems ({counts} problems, not the same questions)")
    return differences


def load_results(run: str | Path) -> dict[str, Any]:
    path = Path(run)
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise RLTuneError(f"{run}: no results.json there (run `rltune eval ... --out {run}` first)")
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RLTuneError(f"{path} is not valid JSON ({exc}); run `rltune eval` again with that --out") from None
    if not isinstance(results, dict) or not isinstance(results.get("benchmarks"), dict) or "settings" not in results:
        raise RLTuneError(f"{path} is not an rltune eval results file (no settings/benchmarks)")
    return results


def _panels(count: int, height: float):
    """A row of `count` panels on a non-interactive backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, count, figsize=(4.5 * count, height), squeeze=False)


def _finish(fig, axes, out_path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_pass_at_k(runs: list[tuple[str, dict[str, Any]]], out_path: str | Path) -> Path:
    """One panel per benchmark: each run's pass@k over k (the k values on the axis) with its 95% bootstrap
    CI as a band; the legend gives each run's n, temperature and problem count."""
    names = sorted({b for _, results in runs for b in results["benchmarks"]})
    fig, axes = _panels(len(names), 3.8)
    for ax, name in zip(axes[0], names):
        all_ks: set[int] = set()
        for label, results in runs:
            bench = results["benchmarks"].get(name)
            if bench is None:
                continue
            settings = results["settings"]
            ks, values = pass_at_k_curve(bench["problems"], settings["n"])
            bands = pass_at_k_bands(bench["problems"], settings["n"], settings.get("seed", 0))
            legend = f"{label} (n={settings['n']}, T={settings['temperature']}, {len(bench['problems'])} problems)"
            (line,) = ax.plot(ks, [100 * v for v in values], marker="o", label=legend)
            ax.fill_between(
                ks, [100 * lo for lo, _ in bands], [100 * hi for _, hi in bands], color=line.get_color(), alpha=0.15
            )
            _, reliable = pass_at_k_curve(bench["problems"], settings["n"], pass_hat_k)
            ax.plot(ks, [100 * v for v in reliable], linestyle="--", color=line.get_color(), label=f"{label} pass^k")
            all_ks.update(ks)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
        ax.set_title(name)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k, dashed pass^k (%), 95% CI")
    return _finish(fig, axes[0], out_path)


def _groups(results: dict[str, Any], name: str, by: str) -> dict[str, dict[str, Any]]:
    """A run's metrics per value of breakdown `by` of benchmark `name` (empty where it has none)."""
    return results["benchmarks"].get(name, {}).get("metrics", {}).get("by", {}).get(by, {})


def plot_breakdowns(runs: list[tuple[str, dict[str, Any]]], out_path: str | Path) -> Path | None:
    """One panel per benchmark and breakdown (MATH-500's level, AIME's year, ...): mean@n of each value with
    its 95% CI, one bar per run. None (nothing drawn) when no benchmark has a breakdown."""
    panels = sorted(
        {
            (name, by)
            for _, r in runs
            for name, bench in r["benchmarks"].items()
            for by in bench["metrics"].get("by", {})
        }
    )
    if not panels:
        return None
    fig, axes = _panels(len(panels), 3.8)
    width = 0.8 / len(runs)
    for ax, (name, by) in zip(axes[0], panels):
        values = list(dict.fromkeys(v for _, results in runs for v in _groups(results, name, by)))
        for i, (label, results) in enumerate(runs):
            groups, key = _groups(results, name, by), f"mean@{results['settings']['n']}"
            shown = [v for v in values if v in groups]
            means = [100 * groups[v][key] for v in shown]
            below = [m - 100 * groups[v][f"{key}_ci"][0] for v, m in zip(shown, means)]
            above = [100 * groups[v][f"{key}_ci"][1] - m for v, m in zip(shown, means)]
            places = [values.index(v) + (i - (len(runs) - 1) / 2) * width for v in shown]
            ax.bar(places, means, width, yerr=[below, above], capsize=2, label=f"{label} ({key})")
        ax.set_xticks(range(len(values)), values, rotation=45 if max(map(len, values)) > 4 else 0, fontsize=7)
        ax.set_title(f"{name} by {by}")
        ax.set_ylabel("mean@n (%), 95% CI")
    return _finish(fig, axes[0], out_path)


def plot_training_curves(runs: list[tuple[str, Path]], keys: list[str], out_path: str | Path) -> Path:
    """One panel per metric key from each run's metrics.jsonl, one line per run, over RL steps."""
    logged = []
    for label, run in runs:
        path = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
        if not path.is_file():
            raise RLTuneError(f"{run}: no metrics.jsonl there")
        logged.append((label, [json.loads(line) for line in path.read_text().splitlines() if line.strip()]))
    available = sorted({key for _, rows in logged for row in rows for key in row} - {"step"})
    missing = [key for key in keys if key not in available]
    if missing:
        raise RLTuneError(
            f"no run logged {', '.join(map(repr, missing))}; the runs logged: {', '.join(available) or 'nothing'}"
        )
    fig, axes = _panels(len(keys), 3.5)
    for label, rows in logged:
        for ax, key in zip(axes[0], keys):
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), label=label)
    for ax, key in zip(axes[0], keys):
        ax.set_title(key)
        ax.set_xlabel("step")
    return _finish(fig, axes[0], out_path)
