"""Checkpoints: HF-format weights plus everything needed to continue the run exactly.

A checkpoint is a folder `checkpoint-<step>` holding the model (`save_pretrained`; LoRA runs keep
the adapter in `adapter/`), the tokenizer, the recipe, and `trainer_state.pt` (step, optimizer,
scheduler, data position, RNG states). It is written into a temporary folder and renamed into
place, so a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rltune.errors import RLTuneError

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
_NAME = re.compile(r"^checkpoint-(\d+)$")


def rng_state() -> dict[str, Any]:
    """RNG states in plain types and tensors only, so checkpoints load with torch's weights_only."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    output_dir: Path,
    step: int,
    model: torch.nn.Module,
    tokenizer: Any,
    state: dict[str, Any],
    recipe_text: str,
    keep: int,
    weights: dict[str, torch.Tensor] | None = None,
    card: str = "",
) -> Path:
    """`weights`: the full state dict when the model is sharded (FSDP, ZeRO-3); else the model's own.
    `card`: the model card, written as README.md (the folder uploads to the Hub as it is)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if hasattr(model, "peft_config"):
        model.save_pretrained(tmp / "adapter", state_dict=weights)
    else:
        model.save_pretrained(tmp, state_dict=weights)
    tokenizer.save_pretrained(tmp)
    (tmp / "recipe.yaml").write_text(recipe_text)
    if card:
        (tmp / "README.md").write_text(card)
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    log.info("saved %s", final)
    return final


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / STATE_FILE).is_file()]


def resolve_checkpoint(resume_from: str, output_dir: Path) -> Path:
    if resume_from == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            raise RLTuneError(f"train.resume_from=latest but {output_dir} holds no complete checkpoint")
        return found[-1]
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise RLTuneError(f"train.resume_from={resume_from!r} is not a checkpoint folder (no {STATE_FILE} in it)")
    return path


def load_state(path: Path) -> dict[str, Any]:
    try:
        # weights_only: a checkpoint cannot run code when it is loaded.
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RLTuneError(f"cannot read {path / STATE_FILE}: {exc}; pick another checkpoint") from exc


def claim_output_dir(output_dir: Path, overwrite: bool, accelerator) -> None:
    """Refuse to start a new run on top of another one in `output_dir`, unless told to replace it."""
    previous = list_checkpoints(output_dir)
    metrics = output_dir / "metrics.jsonl"
    if not previous and not (metrics.is_file() and metrics.stat().st_size > 0):
        return
    if not overwrite:
        raise RLTuneError(
            f"train.output_dir {str(output_dir)!r} holds another run ({len(previous)} checkpoints, "
            "metrics.jsonl): continue it with train.resume_from=latest, choose another output_dir, or set "
            "train.overwrite_output_dir=true to replace it"
        )
    if accelerator.is_main_process:
        logs = [output_dir / name for name in ("tensorboard", "eval", "wandb")]
        for path in [*previous, *output_dir.glob(".checkpoint-*.tmp"), *logs]:
            shutil.rmtree(path, ignore_errors=True)
        metrics.unlink(missing_ok=True)
        (output_dir / "completions.jsonl").unlink(missing_ok=True)
    accelerator.wait_for_everyone()
