"""The rollout-engine protocol, its sampling settings and its registry."""

from __future__ import annotations

import queue
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from rltune.batch import RolloutBatch
from rltune.config import ModelConfig, RolloutConfig
from rltune.errors import RLTuneError
from rltune.registry import Registry

SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens")
"""Sampling settings named alike in a recipe's rollout section, here, and in vLLM's SamplingParams."""


@dataclass
class SamplingSettings:
    n: int
    """Completions per prompt."""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    """Sample among the k likeliest tokens only; 0: all."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the likeliest one; 0: none."""
    repetition_penalty: float = 1.0
    """vLLM engines: divide positive logits (multiply negative ones) of tokens already in the prompt or
    the completion by this; 1: off."""
    stop: list[str] = field(default_factory=list)
    """A completion ends with the token that completes one of these strings (kept in the completion)."""
    generation_kwargs: dict[str, Any] = field(default_factory=dict)
    """vLLM engines: further vLLM SamplingParams fields, passed as they are."""
    max_tokens: int = 256
    seed: int | None = None
    """Seed of the call; prompt i gets seed + i unless `prompt_seeds` says otherwise."""
    prompt_seeds: list[int] | None = None
    """One seed per prompt: a prompt's samples then do not depend on which other prompts share the
    call, so one process and several processes sharing a global batch sample the same completions."""
    prompt_max_tokens: list[int] | None = None
    """One completion budget per prompt, each at most `max_tokens` (a multi-turn rollout's trajectories
    each have their own budget left); None: `max_tokens` for all."""
    progress: str | None = None
    """A label: show a progress bar of the call under it (evals); None: silent (training steps)."""

    @classmethod
    def from_rollout(cls, rollout: RolloutConfig, **fields: Any) -> SamplingSettings:
        """A recipe's sampling settings (`rollout`), with `fields` set or replaced."""
        recipe = {name: getattr(rollout, name) for name in SAMPLING_FIELDS}
        recipe.update(n=rollout.group_size, stop=list(rollout.stop), generation_kwargs=dict(rollout.generation_kwargs))
        return cls(**{**recipe, **fields})

    def vllm_fields(self) -> dict[str, Any]:
        """The settings as vLLM's SamplingParams (and its server's request body) name them, the seed and
        logprobs aside. The stop string stays in the text, as it stays in the tokens."""
        fields = {name: getattr(self, name) for name in ("n", *SAMPLING_FIELDS)}
        if self.stop:
            fields.update(stop=list(self.stop), include_stop_str_in_output=True)
        return {**fields, **self.generation_kwargs}

    def progress_bar(self, *args, **kwargs):
        """The call's progress bar (tqdm's arguments; disabled without a label), under the label, refreshed at
        most every 2 seconds. Also handed to vLLM as its bar factory."""
        from tqdm.auto import tqdm

        return tqdm(*args, **{**kwargs, "desc": self.progress, "disable": self.progress is None, "mininterval": 2.0})

    def budgets(self, count: int) -> list[int]:
        """The completion budget of each of `count` prompts."""
        if self.prompt_max_tokens is None:
            return [self.max_tokens] * count
        if len(self.prompt_max_tokens) != count or max(self.prompt_max_tokens, default=0) > self.max_tokens:
            raise ValueError(f"prompt_max_tokens must be {count} budgets of at most max_tokens ({self.max_tokens})")
        return list(self.prompt_max_tokens)

    def seeds(self, count: int) -> list[int | None]:
        if self.prompt_seeds is not None:
            if len(self.prompt_seeds) != count:
                raise ValueError(f"{len(self.prompt_seeds)} prompt seeds for {count} prompts")
            return list(self.prompt_seeds)
        return [None if self.seed is None else self.seed + i for i in range(count)]


def check_context(prompt_ids: list[list[int]], sampling: SamplingSettings, context: int | None, engine: str) -> None:
    """Refuse, in one line, prompts that leave no room for their completion budget in the model's `context`
    positions (the prompt source skips or refuses them earlier, per data.long_prompts; this guards direct
    callers)."""
    budgets = sampling.budgets(len(prompt_ids))
    longest, max_tokens = max(zip(map(len, prompt_ids), budgets), key=sum, default=(0, 0))
    if context is not None and longest + max_tokens > context:
        raise RLTuneError(
            f"the {engine} engine cannot take a prompt of {longest} tokens with max_tokens {max_tokens}: the model "
            f"holds {context} positions. Lower data.max_prompt_tokens (or max_tokens), or set "
            "data.long_prompts=skip to leave such prompts out"
        )


class RolloutEngine(Protocol):
    def generate(
        self, prompt_ids: list[list[int]], rows: list[dict[str, Any]], sampling: SamplingSettings
    ) -> RolloutBatch:
        """Sample `sampling.n` completions for each prompt, returned group by group."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from `model`'s current weights."""

    def close(self) -> None:
        """Free the engine's memory."""


ENGINES: Registry = Registry(
    "rollout engine",
    builtin_modules=("rltune.rollout.vllm_engine", "rltune.rollout.vllm_server", "rltune.rollout.hf_engine"),
)


def build_engine(name: str, **kwargs: Any) -> RolloutEngine:
    """Build an engine by registered name ('vllm', 'hf') or import path."""
    return ENGINES.get(name)(**kwargs)


def engine_from_recipe(
    rollout: RolloutConfig,
    model: ModelConfig,
    seed: int,
    max_model_len: int,
    policy: torch.nn.Module | None = None,
    tokenizer: Any = None,
    sync_dir: str | None = None,
) -> RolloutEngine:
    """The engine a recipe's `rollout` section asks for. `policy` is the live module the hf engine
    samples from (loaded from `model.path` when not given); vLLM loads its own copy. `sync_dir`: where
    a vLLM server's disk weight sync writes, unless rollout.server.sync_dir says otherwise."""
    if rollout.engine == "hf":
        if policy is None:
            from rltune.models import load_causal_lm

            policy = load_causal_lm(model.path, model)
        return build_engine("hf", model=policy, tokenizer=tokenizer, compile=rollout.hf_compile)
    if rollout.engine == "vllm_server":
        return build_engine("vllm_server", server=rollout.server, sync_dir=sync_dir)
    dtype = rollout.vllm.dtype
    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    eager = rollout.vllm.enforce_eager
    if eager is None:
        eager = not torch.cuda.is_available()
    return build_engine(
        rollout.engine,
        model_path=model.path,
        dtype=dtype,
        seed=seed,
        max_model_len=rollout.vllm.max_model_len or max_model_len,
        gpu_memory_utilization=rollout.vllm.gpu_memory_utilization,
        kv_cache_gib=rollout.vllm.kv_cache_gib,
        enforce_eager=eager,
        sleep=rollout.vllm.sleep,
        trust_remote_code=model.trust_remote_code,
        model=policy,
        tokenizer=tokenizer,
    )


class _Worker:
    """One long-lived daemon thread that runs the calls handed to it (reused: a fresh thread per call pays
    again for per-thread state such as cuBLAS handles). Daemon, so that a stuck call cannot keep the
    process alive."""

    def __init__(self) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="rltune-timeout")
        self.thread.start()

    def _loop(self) -> None:
        while True:
            work, done, result = self.jobs.get()
            try:
                result["value"] = work()
            except BaseException as exc:  # handed to the caller's thread
                result["error"] = exc
            done.set()


_worker: _Worker | None = None
_worker_lock = threading.Lock()


class _Deadline(BaseException):
    """Raised by the alarm inside the guarded call (BaseException: the call's own handlers pass it on)."""


def run_with_timeout(work: Callable[[], Any], timeout_s: float, message: str, on_this_thread: bool = False) -> Any:
    """`work()`, or RLTuneError(message) if it has not returned after `timeout_s`.

    By default `work` runs on a worker thread, so that even a call stuck inside C code is abandoned (it
    cannot be cancelled; the next call gets a new worker). `on_this_thread=True` is for compute-heavy
    work such as generation: a second thread doing CPU math brings a second OpenMP thread team that
    competes with the main one for the cores (twice slower steps on 2 cores, benchmarks/RESULTS.md).
    The call then runs on the calling thread and SIGALRM interrupts it at the deadline, which reaches
    Python code and interruptible waits but not a call stuck inside C code; off the main thread or
    without SIGALRM it falls back to the worker thread."""
    if on_this_thread and hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread():
        return _run_with_alarm(work, timeout_s, message)
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _Worker()
        worker = _worker
    if threading.current_thread() is worker.thread:  # nested: the outer call's timeout already applies
        return work()
    done, result = threading.Event(), {}
    worker.jobs.put((work, done, result))
    if not done.wait(timeout_s):
        with _worker_lock:
            if _worker is worker:
                _worker = None
        raise RLTuneError(message)
    if "error" in result:
        raise result["error"]
    return result["value"]


def _run_with_alarm(work: Callable[[], Any], timeout_s: float, message: str) -> Any:
    def expire(signum, frame):
        raise _Deadline

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(timeout_s, 1e-3))
    try:
        return work()
    except _Deadline:
        raise RLTuneError(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
