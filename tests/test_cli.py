"""The command line, run in this process: what each command prints and returns (the subprocess tests in
test_day_one.py check the entry points themselves)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import rltune.cli as cli
from rltune.errors import RLTuneError, Stopped
from rltune.eval.runner import EvalSettings, summarize


def test_list_prints_every_kind_and_a_sentence_per_plugin(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    headers = [line[:-1] for line in out.splitlines() if not line.startswith(" ")]
    assert headers == list(cli.REGISTRIES)
    entries = dict(line.split(None, 1) for line in out.splitlines() if line.startswith("  "))
    assert "(Dr. GRPO, arXiv" in entries["dr_grpo"]  # not cut at "Dr."
    assert not any(text.endswith(".") for text in entries.values())
    assert cli.main(["list", "loss-terms"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "loss-terms:"


def test_first_sentence_stops_at_the_first_full_stop_not_at_an_abbreviation():
    assert cli._first_sentence("Dr. GRPO by Liu et al. 2025. Second sentence.") == "Dr. GRPO by Liu et al. 2025"
    assert cli._first_sentence("One line.\n\nA second paragraph.") == "One line"
    assert cli._first_sentence(None) == ""


def test_help_shows_set_defaults_and_hides_empty_ones(capsys):
    with pytest.raises(SystemExit):
        cli.main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.6)" in text and "(default: 1024)" in text
    assert "(default: False)" not in text and "(default: None)" not in text
    with pytest.raises(SystemExit):
        cli.main(["eval", "compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: pass_at_k_compare.png)" in text and "(default: False)" not in text


def _results_file(folder, **settings):
    """An eval results file as `rltune eval` writes it, for one problem graded by hand."""
    folder.mkdir()
    samples = [
        {"correct": ok, "answer": a, "finish_reason": "stop", "tokens": 3} for ok, a in [(True, "2"), (False, "3")]
    ]
    problems = [
        {"question": "1+1", "n": 2, "correct": 1, "maj": {"1": True}, "distinct_answers": 2, "samples": samples}
    ]
    eval_settings = EvalSettings(benchmarks=["sums"], n=2, k=[1], **settings)
    results = {
        "settings": vars(eval_settings),
        "benchmarks": {"sums": {"metrics": summarize(problems, eval_settings, 1.0), "problems": problems}},
    }
    (folder / "results.json").write_text(json.dumps(results))
    return str(folder)


def test_eval_compare_refuses_different_settings_unless_forced_and_then_notes_them(tmp_path, capsys):
    a, b = _results_file(tmp_path / "a"), _results_file(tmp_path / "b", temperature=1.0)
    out = tmp_path / "plots" / "compare.png"
    assert cli.main(["eval", "compare", a, b, "--out", str(out)]) == 2
    assert "these runs are not comparable: they differ in temperature" in capsys.readouterr().err
    assert not out.exists()
    assert cli.main(["eval", "compare", a, b, "--out", str(out), "--force"]) == 0
    printed = capsys.readouterr().out
    assert "note: the runs differ in temperature (a: 0.6, b: 1.0)" in printed and "== a\nbenchmark" in printed
    assert out.is_file()
    same = _results_file(tmp_path / "c")
    assert cli.main(["eval", "compare", a, same, "--out", str(out)]) == 0
    assert "note:" not in capsys.readouterr().out


def test_errors_stops_and_interrupts_each_end_the_command_with_their_own_line(monkeypatch, capsys):
    def raising(exc):
        def command(args):
            raise exc

        return command

    cases = [(RLTuneError("the recipe names no model"), 2, "rltune: error: the recipe names no model"),
             (Stopped("stopped on SIGTERM after saving checkpoint-3", 143), 143,
              "rltune: stopped on SIGTERM after saving checkpoint-3"),
             (KeyboardInterrupt(), 130, "rltune: interrupted")]  # fmt: skip
    for exc, code, line in cases:
        monkeypatch.setattr(cli, "cmd_list", raising(exc))
        assert cli.main(["list"]) == code
        assert capsys.readouterr().err.strip() == line


def test_demo_model_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    assert cli.main(["demo-model", str(tmp_path / "taken")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_listing_quietly(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "rltune", "list"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline() == "rewards:\n"
    proc.stdout.close()  # `rltune list | head -1`
    assert proc.wait(timeout=120) == 0
    assert "Traceback" not in proc.stderr.read()


def test_an_eval_into_a_folder_another_eval_writes_is_refused(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "eval"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from rltune.checkpoint import OutputLock; "
         "OutputLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        code = cli.main(["eval", "--model", str(tiny_model_dir), "--benchmarks", "x.jsonl:q:a", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2 and f"in use by another run (pid {holder.pid} on host" in err and "choose another --out" in err
    finally:
        holder.kill()
        holder.wait()


def test_shipped_recipes_run_by_name_from_any_folder(tmp_path):
    """The recipes and accelerate configs are package data: listed, shown and loaded by name from a folder
    that has no recipes/ of its own."""
    from conftest import run_rltune

    listed = run_rltune("recipe", "list", cwd=tmp_path).stdout
    assert "demo_cpu.yaml" in listed and "accelerate/fsdp2_cpu_2proc.yaml" in listed
    folder = listed.strip().splitlines()[-1].split(" in ", 1)[1].split(" (")[0]
    assert (Path(folder) / "accelerate" / "fsdp2_cpu_2proc.yaml").is_file()  # a path for --config_file
    shown = run_rltune("recipe", "show", "demo_cpu", "train.steps=3", cwd=tmp_path).stdout
    assert "steps: 3" in shown
    missing = run_rltune("recipe", "show", "no_such_recipe", cwd=tmp_path, ok=False)
    assert "does not exist (`rltune recipe list` shows the shipped ones)" in missing.stderr


def test_eval_recipe_takes_the_training_runs_settings_and_latest_checkpoint(tmp_path, capsys):
    """`rltune eval --recipe R`: R's eval section and prompt format are the defaults, its output_dir's latest
    checkpoint the model; a flag on the command line still wins."""
    from conftest import write_recipe

    out = tmp_path / "run"
    for step in (2, 10):  # two complete checkpoints: the latest is taken
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.pt").write_bytes(b"x")
    recipe = write_recipe(
        tmp_path,
        {
            "data": {
                "path": "x.jsonl",
                "instruction": "Q: {question}",
                "use_chat_template": False,
                "system_prompt": "S",
            },
            "rollout": {
                "max_tokens": 48,
                "environment": "python_tool",
                "environment_kwargs": {"cpu_s": 2},
                "max_turns": 3,
            },
            "eval": {"benchmarks": ["math500", "aime24"], "n": 8, "k": [1, 8], "temperature": 0.9, "limit": 5},
            "train": {"output_dir": str(out), "seed": 3},
        },
    )
    args = cli.parse_args(["eval", "--recipe", str(recipe), "--out", str(tmp_path / "ev"), "--n", "2"])
    assert args.model == str(out / "checkpoint-10")
    assert (args.benchmarks, args.k, args.temperature, args.limit) == ("math500,aime24", [1, 8], 0.9, 5)
    assert (args.max_tokens, args.instruction, args.no_chat_template, args.seed) == (48, "Q: {question}", True, 3)
    assert args.system_prompt == "S"  # as the run's periodic eval writes its prompts
    assert (args.env, args.env_kwargs, args.max_turns) == ("python_tool", {"cpu_s": 2}, 3)  # sampled with its tool
    assert args.n == 2  # the flag wins over the recipe's 8
    for bad, said in (("[1]", "expected a JSON object, got '[1]'"), ("{bad", "expected a JSON object, got '{bad'")):
        with pytest.raises(SystemExit):
            cli.parse_args(["eval", "--model", "m", "--out", str(tmp_path / "ev"), "--env-kwargs", bad])
        assert said in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["eval", "--out", str(tmp_path / "ev")])  # neither --model nor --recipe
    args = cli.parse_args(["eval", "--base-url", "http://h:1", "--out", str(tmp_path / "ev"), "--by", "book, year"])
    assert args.model is None and args.by == ["book", "year"]  # a served model needs no --model


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["recipe", "show", "demo_cpu"], ["eval", "--help"]])
def test_commands_that_sample_nothing_do_not_import_vllm(argv):
    code = (
        "import sys, io, contextlib\nfrom rltune.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    try:\n        main({argv!r})\n"
        "    except SystemExit:\n        pass\nprint('vllm' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr[-2000:]


def test_an_eval_answered_from_its_cache_starts_no_engine(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import rltune.rollout

    bench = tmp_path / "sums.jsonl"
    bench.write_text("".join(json.dumps({"q": f"{a}+{a}=", "a": str(2 * a)}) + "\n" for a in range(3)))
    argv = ["eval", "--model", str(tiny_model_dir), "--benchmarks", f"{bench}:q:a", "--n", "2", "--engine", "hf"]
    argv += ["--max-tokens", "4", "--no-chat-template", "--out", str(tmp_path / "ev")]
    assert cli.main(argv) == 0
    first = json.loads((tmp_path / "ev" / "results.json").read_text())

    def no_engine(*args, **kwargs):
        raise AssertionError("an engine was started although every answer is cached")

    monkeypatch.setattr(rltune.rollout, "build_engine", no_engine)
    import rltune.eval.plots

    drawn, plot = [], rltune.eval.plots.plot_pass_at_k
    monkeypatch.setattr(rltune.eval.plots, "plot_pass_at_k", lambda runs, out: (drawn.extend(runs), plot(runs, out))[1])
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert [label for label, _ in drawn] == [tiny_model_dir.name]  # the plot names the model by its folder
    again = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert again["benchmarks"]["sums"]["metrics"]["pass@1"] == first["benchmarks"]["sums"]["metrics"]["pass@1"]
    argv[argv.index("--n") + 1] = "3"  # one more sample each: now an engine is needed
    with pytest.raises(AssertionError, match="an engine was started"):
        cli.main(argv)


def every_parser() -> dict[str, argparse.ArgumentParser]:
    top = cli.build_parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {
        "rltune": top,
        **{f"rltune {n}": p for n, p in commands.items()},
        "rltune eval compare": cli.build_compare_parser(),
    }


def test_every_command_and_argument_says_what_it_is_for():
    for name, parser in every_parser().items():
        assert parser.description, f"{name} --help has no description"
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                assert action.help, f"{name} {'/'.join(action.option_strings) or action.dest} has no help text"


def test_a_flag_given_on_the_command_line_has_the_type_of_its_default():
    """`--temperature 0.6` must be the float 0.6 that the default is, not the string '0.6'."""
    checked = 0
    for name, parser in every_parser().items():
        for action in parser._actions:
            default = action.default
            if not action.option_strings or action.nargs == 0 or default in (None, argparse.SUPPRESS):
                continue
            text = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            parsed = action.type(text) if action.type else text
            assert parsed == default and type(parsed) is type(default), f"{name} {action.option_strings[0]} {text}"
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("thinking", [False, True])
def test_demo_model_builds_the_toy_model_the_demo_recipes_expect(tmp_path, monkeypatch, thinking):
    import rltune.demo

    built = {}
    monkeypatch.setattr(rltune.demo, "write_demo_assets", lambda model, data, **kw: built.update(kw, model=model))
    assert cli.main(["demo-model", str(tmp_path / "demo"), *(["--thinking"] if thinking else [])]) == 0
    # right 35% of the time for GRPO to sharpen (50% for the thinking model, whose traces are longer)
    assert built == {
        "model": tmp_path / "demo" / "model",
        "warmup_steps": 800 if thinking else 300,
        "p_correct": 0.5 if thinking else 0.35,
        "thinking": thinking,
    }
    assert cli.main(["demo-model", str(tmp_path / "other"), "--warmup-steps", "7"]) == 0 and built["warmup_steps"] == 7


def test_every_eval_flag_reaches_the_eval_settings(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "_run_eval", lambda args, settings, out: seen.update(settings=settings, out=out) or 0)
    argv = [
        "eval", "--model", "some-model", "--benchmarks", "gsm8k, math500", "--n", "6", "--k", "1,3",
        "--temperature", "0.9", "--top-p", "0.8", "--max-tokens", "77", "--limit", "5", "--data-dir", "/bench",
        "--no-chat-template", "--seed", "4", "--answer-fallback", "--system-prompt", "Be brief.",
        "--env", "python_tool", "--env-kwargs", '{"timeout_s": 2}', "--max-turns", "3", "--by", "level,subject",
        "--instruction", "Q: {question}", "--out", str(tmp_path / "ev"),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    expected = dict(
        benchmarks=["gsm8k", "math500"], n=6, k=[1, 3], temperature=0.9, top_p=0.8, max_tokens=77, limit=5,
        data_dir="/bench", use_chat_template=False, seed=4, answer_fallback=True, system_prompt="Be brief.",
        environment="python_tool", environment_kwargs={"timeout_s": 2}, max_turns=3,
        breakdowns=["level", "subject"], instruction="Q: {question}",
    )  # fmt: skip
    assert {key: getattr(seen["settings"], key) for key in expected} == expected
    assert seen["out"] == tmp_path / "ev"


def test_prefer_says_what_it_trained_and_where_it_saved(tmp_path, monkeypatch, capsys):
    import rltune.preference

    monkeypatch.setattr(rltune.preference, "run_preference", lambda recipe: {"loss_first": 0.69, "loss_last": 0.4})
    out = tmp_path / "simpo"
    assert cli.main(["prefer", "recipes/dto_cpu.yaml", f"prefer.output_dir={out}"]) == 0
    assert capsys.readouterr().out.strip() == (
        f'rltune prefer (simpo): {{"loss_first": 0.69, "loss_last": 0.4}}; model saved to {out}'
    )


def test_demo_with_overrides_only_runs_the_default_recipe_on_existing_assets(tmp_path, demo_assets, capsys):
    """`rltune demo key=value ...`: the default recipe with those overrides; a model folder that exists is
    used as it is (no warm-up: its time is that of reading the recipe). Eight problems keep it short."""
    model_dir, data_file = demo_assets
    few = tmp_path / "few.jsonl"
    few.write_text("".join(data_file.read_text().splitlines(keepends=True)[:8]))
    out = tmp_path / "run"
    overrides = [f"model.path={model_dir}", f"data.path={few}", f"train.output_dir={out}", "train.steps=1"]
    overrides += ["train.prompts_per_step=2", "rollout.engine=hf", "train.progress_bar=false", "train.report_to=[]"]
    assert cli.main(["demo", *overrides]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert 0 <= summary["warmup_s"] < 1.0 and summary["warmup_s"] <= summary["total_s"]
    assert f"{summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f}" in capsys.readouterr().out


def test_the_cli_module_runs_as_a_program_too():
    from rltune import __version__

    for module in ("rltune", "rltune.cli"):
        proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=120)
        assert (proc.returncode, proc.stdout.strip()) == (0, f"rltune {__version__}"), proc.stderr[-2000:]
    bad = subprocess.run([sys.executable, "-m", "rltune.cli", "no-such-command"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'no-such-command'" in bad.stderr
