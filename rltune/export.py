"""Checkpoints as standalone models: LoRA adapters merged into their base, and a model card.

A run with `model.lora` saves only `adapter/` (plus the tokenizer, recipe and trainer state) in each
checkpoint. `merge_lora_checkpoint` loads the adapter's base model, merges the adapters into its weights
and writes a plain Hugging Face model folder, which any engine loads. `export_checkpoint` does that (or
copies a full fine-tuning checkpoint's model files) and adds a README.md model card.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import yaml

from rltune.errors import RLTuneError

log = logging.getLogger(__name__)

# What a full fine-tuning checkpoint's model is made of (the trainer state and the recipe stay behind)
_MODEL_FILES = (".safetensors", ".json", ".model", ".tiktoken", ".txt", ".jinja")


def is_lora_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "adapter" / "adapter_config.json").is_file() and not (folder / "config.json").is_file()


def lora_base(checkpoint: Path) -> str:
    """The base model the checkpoint's adapters were trained on: as recorded at training time (an absolute
    path), else the adapter config's, else the recipe's."""
    from rltune.checkpoint import LORA_BASE

    recorded = checkpoint / "adapter" / LORA_BASE
    if recorded.is_file():
        return json.loads(recorded.read_text())["base_model"]
    config = json.loads((checkpoint / "adapter" / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base and (checkpoint / "recipe.yaml").is_file():
        base = (yaml.safe_load((checkpoint / "recipe.yaml").read_text()) or {}).get("model", {}).get("path")
    if not base:
        raise RLTuneError(f"{checkpoint}: its adapter names no base model (adapter_config.json, recipe.yaml)")
    return base


def merge_lora_checkpoint(checkpoint: str | Path, out: str | Path, base_model: str | None = None) -> Path:
    """Write the checkpoint's adapters merged into their base model, with its tokenizer, to `out`.
    `base_model`: where that base is now, when it has moved since training (it must be the same weights)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rltune.checkpoint import LORA_BASE, base_identity

    checkpoint, out = Path(checkpoint), Path(out)
    base = base_model or lora_base(checkpoint)
    recorded = checkpoint / "adapter" / LORA_BASE
    trained_on = json.loads(recorded.read_text()).get("weights_sha256") if recorded.is_file() else None
    now = base_identity(base)["weights_sha256"]
    if trained_on and now != trained_on:
        raise RLTuneError(
            f"{checkpoint}: its adapters were trained on {base} with weights sha256 {trained_on[:16]}, but the "
            f"model there now is {'gone' if now is None else f'another one (sha256 {now[:16]})'}; merging into "
            "it would give a model nobody trained. Put the original base model back at that path, or name where "
            "it is now with --base-model"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(base)
    except OSError as exc:
        raise RLTuneError(
            f"{checkpoint}: cannot load its base model {base!r} to merge the adapters into: {exc}"
        ) from exc
    merged = PeftModel.from_pretrained(model, str(checkpoint / "adapter")).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(checkpoint).save_pretrained(out)
    log.info("merged the LoRA adapters of %s into %s: %s", checkpoint, base, out)
    return out


def export_checkpoint(checkpoint: str | Path, out: str | Path, base_model: str | None = None) -> Path:
    """A standalone model folder at `out` from a training checkpoint, with a README.md model card and a
    manifest of what it holds. The checkpoint's files are verified against its manifest first (a damaged
    checkpoint is refused, as resume refuses it); the folder is written beside `out` and renamed into place,
    so an export cut short leaves no folder that looks complete."""
    from rltune.checkpoint import MANIFEST, disk_full, file_digests, verify_checkpoint

    checkpoint, out = Path(checkpoint), Path(out)
    if not checkpoint.is_dir():
        raise RLTuneError(f"{checkpoint} is not a checkpoint folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RLTuneError(f"{out} exists and is not an empty folder; choose a new folder to export to")
    verify_checkpoint(checkpoint)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_lora_checkpoint(checkpoint):
            merge_lora_checkpoint(checkpoint, tmp, base_model)
            base = base_model or lora_base(checkpoint)
        elif (checkpoint / "config.json").is_file():
            tmp.mkdir(parents=True)
            for file in checkpoint.iterdir():
                if file.is_file() and file.suffix in _MODEL_FILES and file.name != MANIFEST:
                    shutil.copy2(file, tmp / file.name)
            base = None
        else:
            raise RLTuneError(f"{checkpoint} holds neither a model (config.json) nor LoRA adapters (adapter/)")
        recipe_text = (checkpoint / "recipe.yaml").read_text() if (checkpoint / "recipe.yaml").is_file() else ""
        step = checkpoint.name.rsplit("-", 1)[-1]
        (tmp / "README.md").write_text(model_card(checkpoint.parent, step, recipe_text, base, merged=True))
        (tmp / MANIFEST).write_text(json.dumps(file_digests(tmp), indent=1))
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except Exception as exc:  # an unwritable target, or a full disk however the writer reports it
        where = out.parent if out.parent.exists() else Path.cwd()
        if not isinstance(exc, OSError) and not disk_full(exc, where):
            raise
        free = shutil.disk_usage(where).free
        reason = getattr(exc, "strerror", None) or str(exc)
        raise RLTuneError(
            f"cannot export {checkpoint} to {out}: {reason} ({free / 1e9:.2f} GB free there); nothing was written"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_hub_access(repo_id: str) -> None:
    """Stop before training when checkpoints are to be pushed but no Hub token is set up."""
    from huggingface_hub import get_token

    if not get_token():
        raise RLTuneError(
            f"train.push_to_hub uploads to {repo_id!r} but no Hugging Face token is set up: log in with "
            "`hf auth login` or set HF_TOKEN (or turn train.push_to_hub off)"
        )


def push_checkpoint(checkpoint: Path, repo_id: str, private: bool) -> None:
    """Upload a checkpoint's model (or adapters), tokenizer, recipe and model card, not the trainer state.
    A failed upload is logged and training goes on: the checkpoint is safe on disk."""
    from huggingface_hub import HfApi

    from rltune.checkpoint import STATE_FILE

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(checkpoint),
            commit_message=f"rltune: {checkpoint.name}",
            ignore_patterns=[STATE_FILE],
        )
    except Exception as exc:  # network, permissions, quota: the run itself is unaffected
        log.warning("pushing %s to the Hub repository %s failed: %s: %s", checkpoint, repo_id, type(exc).__name__, exc)
        return
    log.info("pushed %s to https://huggingface.co/%s", checkpoint.name, repo_id)


def model_card(run_dir: Path, step: int | str, recipe_text: str, lora_base_model: str | None, merged: bool) -> str:
    """Markdown: the base model, the steps trained, the metrics logged at `step`, the latest eval up to it and
    the recipe. `lora_base_model`: the base of a LoRA run's adapters (`merged`: merged into it, as exported)."""
    recipe = yaml.safe_load(recipe_text) or {}
    step = str(step)
    base = lora_base_model or recipe.get("model", {}).get("path", "unknown")
    if lora_base_model:
        kind = " (LoRA adapters, merged into the base weights)." if merged else " (LoRA adapters in adapter/)."
    else:
        kind = " (full fine-tuning)."
    lines = [
        "---",
        yaml.safe_dump({"base_model": base, "library_name": "transformers", "tags": ["rltune", "grpo"]}).rstrip(),
        "---",
        "",
        f"# {run_dir.name}/checkpoint-{step}",
        "",
        f"Trained with rltune from **{base}** for {step} RL steps{kind}",
        "",
    ]
    metrics_file = run_dir / "metrics.jsonl"
    if metrics_file.is_file():
        logged = [json.loads(x) for x in metrics_file.read_text().splitlines() if x.strip()]
        at_step = [m for m in logged if str(m.get("step")) == step] or logged[-1:]
        if at_step:
            shown = {
                k: v
                for k, v in at_step[-1].items()
                if (k.startswith(("reward/", "eval/")) or k in ("loss", "kl")) and isinstance(v, (int, float))
            }
            lines += ["## Metrics at this step", "", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {v:.4g} |" for k, v in shown.items()] + [""]
    # the latest training-time eval up to this step
    evals = sorted(
        (p for p in (run_dir / "eval").glob("step-*.json") if not step.isdigit() or int(p.stem[5:]) <= int(step)),
        key=lambda p: int(p.stem[5:]),
    )
    if evals:
        from rltune.eval.runner import format_table

        lines += [f"## Eval ({evals[-1].stem})", "", "```", format_table(json.loads(evals[-1].read_text())), "```", ""]
    if recipe_text:
        lines += ["## Recipe", "", "```yaml", recipe_text.rstrip(), "```", ""]
    return "\n".join(lines)
