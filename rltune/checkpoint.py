"""Checkpoints: HF-format weights plus everything needed to continue the run exactly.

A checkpoint is a folder `checkpoint-<step>` holding the model (`save_pretrained`; LoRA runs keep
the adapter in `adapter/`), the tokenizer, the recipe, and `trainer_state.pt` (step, optimizer,
scheduler, data position, RNG states). It is written into a temporary folder and renamed into
place, so a crash never leaves a half-written checkpoint under the final name. `manifest.json` holds the
sha256 of every file, written inside the rename and checked at resume, so bytes changed afterwards are
found. Weights that are not finite are never saved.

A run holds `output_dir/.lock` (pid and host) while it trains, so a second run cannot write into it.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rltune.errors import RLTuneError

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
MANIFEST = "manifest.json"
LORA_BASE = "base_model.json"  # in a LoRA checkpoint's adapter/: which base model the adapters belong to
LOCK = ".lock"
# What resuming needs from trainer_state.pt
STATE_KEYS = ("step", "optimizer", "scheduler", "data", "rng")
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
    tensors = weights if weights is not None else model.state_dict()
    damaged = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if damaged:
        previous = list_checkpoints(output_dir)
        raise RLTuneError(
            f"not saving checkpoint-{step}: {len(damaged)} weight tensors hold NaN/inf (first {damaged[0]!r}); the "
            f"run diverged. The last good checkpoint is {previous[-1] if previous else 'none'}; lower train.lr"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{step}"
    tmp = output_dir / f".checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        if hasattr(model, "peft_config"):
            model.save_pretrained(tmp / "adapter", state_dict=weights)
            base = model.peft_config["default"].base_model_name_or_path
            (tmp / "adapter" / LORA_BASE).write_text(json.dumps(base_identity(base), indent=1))
        else:
            model.save_pretrained(tmp, state_dict=weights)
        tokenizer.save_pretrained(tmp)
        (tmp / "recipe.yaml").write_text(recipe_text)
        if card:
            (tmp / "README.md").write_text(card)
        torch.save(state, tmp / STATE_FILE)
        (tmp / MANIFEST).write_text(json.dumps(file_digests(tmp), indent=1))
    except Exception as exc:  # a full disk: OSError, safetensors' SafetensorError, torch's "unexpected pos"
        shutil.rmtree(tmp, ignore_errors=True)
        # weights, plus about two optimizer moments of the trained ones in float32
        need = sum(t.numel() * t.element_size() for t in tensors.values()) * 3
        free = shutil.disk_usage(output_dir).free
        if not disk_full(exc, output_dir, need):
            raise
        raise RLTuneError(
            f"no space left on the device of {output_dir} while writing checkpoint-{step}: {free / 1e9:.2f} GB free, "
            f"a checkpoint needs about {need / 1e9:.2f} GB. Free space there (or lower train.keep_checkpoints) and "
            "continue with train.resume_from=latest"
        ) from exc
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


def base_identity(base: str) -> dict[str, str | None]:
    """What a LoRA checkpoint's adapters were trained on: the base model's absolute path and a sha256 over its
    weight files when it is a local folder (a hub id is kept as typed)."""
    folder = Path(base).expanduser()
    if not folder.is_dir():
        return {"base_model": base, "weights_sha256": None}
    return {"base_model": str(folder.resolve()), "weights_sha256": _weights_sha256(folder.resolve(), _stamp(folder))}


def _stamp(folder: Path) -> tuple:
    return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.glob("*")) if p.is_file())


@functools.lru_cache(maxsize=8)
def _weights_sha256(folder: Path, stamp: tuple) -> str:
    """sha256 over the weight files' digests; `stamp` (names, sizes, mtimes) keys the cache: once per save
    would rehash a whole base model every checkpoint."""
    files = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix in (".safetensors", ".bin"))
    return hashlib.sha256("\n".join(f"{p.name}:{file_sha256(p)}" for p in files).encode()).hexdigest()


def disk_full(exc: BaseException, folder: Path, need: int = 0) -> bool:
    """Whether a failed write ran out of space: ENOSPC, its text (safetensors' SafetensorError), or less free
    space in `folder` than the `need` bytes written (torch reports a short write only as "unexpected pos")."""
    no_space = getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc)
    return no_space or shutil.disk_usage(folder).free < need


def file_sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (but the manifest), by relative path."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    return {file.relative_to(folder).as_posix(): file_sha256(file) for file in files}


def verify_checkpoint(path: Path) -> None:
    """Every file as the manifest recorded it at save (checkpoints written before manifests pass)."""
    if not (path / MANIFEST).is_file():
        log.warning("%s: not verified: no %s (deleted, or written by an older rltune)", path, MANIFEST)
        return
    try:
        recorded = json.loads((path / MANIFEST).read_text())
    except json.JSONDecodeError as exc:
        raise RLTuneError(f"{path / MANIFEST} is damaged ({exc}); resume from another checkpoint") from exc
    found = file_digests(path)
    changed = sorted(name for name, digest in recorded.items() if found.get(name) != digest)
    if changed:
        others = [p for p in list_checkpoints(path.parent) if p != path]
        hint = f"resume from {others[-1]}" if others else "no other checkpoint is left; start the run again"
        raise RLTuneError(
            f"{path}: {', '.join(changed)} changed or vanished since the checkpoint was saved (sha256 differs from "
            f"{MANIFEST}); the checkpoint is damaged: {hint} (train.resume_from=<folder>)"
        )


def load_state(path: Path) -> dict[str, Any]:
    """The trainer state of checkpoint `path`, its files verified against the manifest."""
    verify_checkpoint(path)
    try:
        # weights_only: a checkpoint cannot run code when it is loaded.
        state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RLTuneError(f"cannot read {path / STATE_FILE}: {exc}; pick another checkpoint") from exc
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise RLTuneError(
            f"{path / STATE_FILE} is damaged: it has no {', '.join(missing)}; resume from another checkpoint"
        )
    if not isinstance(state["rng"], list) or not state["rng"] or not all(isinstance(r, dict) for r in state["rng"]):
        raise RLTuneError(f"{path / STATE_FILE} is damaged: its RNG states are not a list of states per process")
    return state


def restore_rng(state: dict[str, Any], path: Path) -> None:
    try:
        set_rng_state(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise RLTuneError(
            f"{path / STATE_FILE} is damaged: its RNG state cannot be restored ({type(exc).__name__}: {exc}); "
            "resume from another checkpoint"
        ) from exc


# Recipe keys a resumed run cannot change: the checkpoint's weights, data position, RNG streams and
# loss-term states only mean something under the values they were saved with.
FIXED_ON_RESUME = ("model.path", "model.lora", "data.path", "data.subset", "data.split", "data.shuffle", "train.seed",
                   "algorithm.loss_terms", "train.async_steps")  # fmt: skip
# Keys that name where and how to resume rather than what is trained
RESUME_KEYS = ("train.output_dir", "train.resume_from", "train.overwrite_output_dir")


def is_fixed_on_resume(key: str) -> bool:
    """A key of FIXED_ON_RESUME or one inside it (`model.lora.r`), not one that merely starts alike."""
    return any(key == fixed or key.startswith(fixed + ".") for fixed in FIXED_ON_RESUME)


def recipe_changes(saved: dict, current: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) of every setting that differs between two recipes. A setting the saved
    recipe lacks did not exist when the checkpoint was written; its default keeps the old behaviour, so it
    is not a change (a checkpoint of an older rltune resumes)."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        if key not in saved:
            continue
        old, new, name = saved.get(key), current.get(key), prefix + key
        if isinstance(old, dict) and isinstance(new, dict) and not is_fixed_on_resume(name):
            changes += recipe_changes(old, new, name + ".")
        elif old != new and name not in RESUME_KEYS:
            changes.append((name, old, new))
    return changes


def check_resume_recipe(checkpoint: Path, current_yaml: str) -> list[tuple[str, Any, Any]]:
    """Refuse changes a resume cannot apply; return the others (they apply from the next step)."""
    import yaml

    saved_file = checkpoint / "recipe.yaml"
    if not saved_file.is_file():
        return []
    changes = recipe_changes(yaml.safe_load(saved_file.read_text()) or {}, yaml.safe_load(current_yaml) or {})
    fixed = [c for c in changes if is_fixed_on_resume(c[0])]
    if fixed:
        listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in fixed)
        raise RLTuneError(
            f"resuming {checkpoint} with a recipe that changes what it was trained with ({listed}): a resumed run "
            "keeps these; put them back, or start a new run (another train.output_dir)"
        )
    return changes


class OutputLock:
    """`output_dir/.lock` while a run trains there: a second run (another pid, or another host sharing the
    folder) is refused and told who holds it. A lock left by a process that died on this host is taken over.

    The file carries an flock for the holder's life, so two processes starting at once cannot both take it
    (the kernel grants the flock to one) and a crashed holder's flock is gone with it; its content (pid and
    host) names the holder in the refusal, and refuses a holder on another host sharing the folder, whose
    flock a network filesystem may not show."""

    _held_here: dict[Path, OutputLock] = {}  # this process's locks, by path: a new trainer takes them over

    def __init__(self, output_dir: Path, setting: str = "train.output_dir"):
        self.path = output_dir / LOCK
        self.setting = setting  # what the user changes to go elsewhere, named in the refusal
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = self.path.resolve()
        earlier = OutputLock._held_here.get(key)
        if earlier is not None and earlier.fd is not None:  # this process's earlier trainer (a notebook cell)
            self.fd, earlier.fd = earlier.fd, None
            OutputLock._held_here[key] = self
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse(self._holder())
            if not self._still_at_path(fd):  # released and removed between our open and flock: open again
                os.close(fd)
                continue
            holder = self._holder()
            if holder is not None and not self._stale(holder):
                os.close(fd)
                self._refuse(holder)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
            except OSError as exc:  # a full disk: no empty lock left behind
                self.path.unlink(missing_ok=True)
                os.close(fd)
                free = shutil.disk_usage(self.path.parent).free
                raise RLTuneError(
                    f"cannot write {self.path}: {exc.strerror or exc} ({free / 1e6:.1f} MB free there)"
                ) from exc
            self.fd = fd
            OutputLock._held_here[key] = self
            return

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _refuse(self, holder: dict | None) -> None:
        who = f"pid {holder.get('pid')} on host {holder.get('host')}" if holder else "a process starting right now"
        raise RLTuneError(
            f"{self.path.parent} is in use by another run ({who}): wait for it, stop it, or choose another "
            f"{self.setting} (if that process is gone, delete {self.path})"
        ) from None

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # empty (being written, or left by a crash) or vanished
        return holder if isinstance(holder, dict) else None

    @staticmethod
    def _stale(holder: dict) -> bool:
        """A lock file whose flock is free: its holder is gone, unless it runs on another host (whose flock a
        network filesystem may not carry) or the file was written without one (an older rltune)."""
        if holder.get("host") != socket.gethostname():
            return False  # another machine's process cannot be checked from here
        if holder.get("pid") == os.getpid():
            return True
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return False

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # before the flock goes: a waiting opener then sees a new file
            os.close(self.fd)
            self.fd = None
            OutputLock._held_here.pop(self.path.resolve(), None)


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
