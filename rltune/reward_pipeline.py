"""RewardPipeline: runs every configured reward over a RolloutBatch and sums them with weights.

Per-sample rewards run first (sync ones in a thread pool, async ones concurrently on an event loop),
then group rewards, one call per group. Every component is kept unweighted in
`batch.reward_components` for logging; `batch.rewards` is the weighted sum.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from rltune.batch import RolloutBatch
from rltune.config import RewardSpec
from rltune.errors import ConfigError, RLTuneError
from rltune.rewards import REWARDS, Completion

log = logging.getLogger(__name__)


@dataclass
class _Component:
    name: str
    fn: Callable[..., Any]
    weight: float
    group: bool
    is_async: bool
    token_level: bool = False
    gamma: float = 1.0


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1} along the last dimension."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


class RewardPipeline:
    def __init__(self, specs: list[RewardSpec], on_error: str = "zero", timeout_s: float = 30.0, max_threads: int = 8):
        self.on_error = on_error
        self.timeout_s = timeout_s
        self.max_threads = max_threads
        self.components: list[_Component] = []
        for spec in specs:
            obj = spec.function if spec.function is not None else REWARDS.get(spec.name)
            label = spec.name or getattr(obj, "__name__", type(obj).__name__)
            if inspect.isclass(obj):
                try:
                    fn = obj(**spec.kwargs)
                except TypeError as exc:
                    raise ConfigError(f"reward {label!r}: bad kwargs {spec.kwargs}: {exc}") from exc
            elif callable(obj):
                if spec.kwargs:
                    raise ConfigError(f"reward {label!r} is a function and takes no kwargs (got {spec.kwargs})")
                fn = obj
            else:
                raise ConfigError(f"reward {label!r} resolved to {obj!r}, which is not callable")
            name = label.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
            taken = {c.name for c in self.components}
            unique, k = name, 2
            while unique in taken:
                unique, k = f"{name}_{k}", k + 1
            group = bool(getattr(fn, "group", False) or getattr(obj, "group", False))
            token_level = bool(getattr(fn, "token_level", False))
            if token_level and group:
                raise ConfigError(f"reward {label!r} cannot be both a group and a token-level reward")
            gamma = float(getattr(fn, "gamma", 1.0))
            self.components.append(_Component(unique, fn, spec.weight, group, _is_async(fn), token_level, gamma))
        for position, comp in enumerate(self.components):
            # Per-sample rewards run in recipe order, so one may only read those listed before it.
            readable = {c.name for c in self.components[: len(self.components) if comp.group else position]}
            readable &= {c.name for c in self.components if not c.group}
            for needed in getattr(comp.fn, "needs_rewards", ()):
                if needed not in readable:
                    raise ConfigError(
                        f"reward {comp.name!r} reads the per-sample reward {needed!r}: list it before "
                        f"{comp.name!r} in the recipe's rewards (weight 0 if it should count only through it)"
                    )
        self.errors = 0

    def score(self, batch: RolloutBatch) -> None:
        """Fill `batch.reward_components` and `batch.rewards`.

        A reward may return a dict instead of a number (a group reward: a dict of lists): its 'score'
        entry is the reward, and every other entry is logged as the component `<name>/<key>`.
        """
        completions = [
            Completion(text=t, token_ids=ids, finish_reason=f)
            for t, ids, f in zip(batch.completion_texts, batch.completion_ids, batch.finish_reasons)
        ]
        groups = batch.groups()
        batch.token_returns = None
        # Per-sample rewards first (each call covers one sample), then group rewards (one call a group).
        for comp in sorted(self.components, key=lambda c: c.group):
            if comp.token_level:
                self._score_tokens(comp, batch, completions)
                continue
            if comp.group:
                targets = groups
                calls = [([completions[i] for i in idx], batch.rows[g]) for g, idx in enumerate(groups)]
                labels = [f"group {g}" for g in range(len(groups))]
            else:
                targets = [[i] for i in range(len(batch))]
                calls = [(c, batch.row_of(i)) for i, c in enumerate(completions)]
                labels = [repr(c.text[:200]) for c in completions]
            values: dict[str, torch.Tensor] = {}
            for idx, result, label in zip(targets, self._run(comp, calls), labels):
                for key, scores in self._check(comp, result, label, len(idx)).items():
                    values.setdefault(key, torch.zeros(len(batch)))[idx] = torch.tensor(scores, dtype=torch.float32)
            for key, tensor in values.items():
                batch.reward_components[comp.name if key == "score" else f"{comp.name}/{key}"] = tensor
            for i, c in enumerate(completions):
                c.rewards[comp.name] = float(values["score"][i])
        batch.rewards = sum(c.weight * batch.reward_components[c.name] for c in self.components if not c.token_level)

    def _score_tokens(self, comp: _Component, batch: RolloutBatch, completions: list[Completion]) -> None:
        """A token-level reward: one value per generated token. Its discounted returns (gamma per
        stream) are added, weighted, to `batch.token_returns`; the per-sample sum is logged."""
        results = self._run(comp, [(c, batch.row_of(i)) for i, c in enumerate(completions)])
        width = max((len(ids) for ids in batch.completion_ids), default=0)
        rewards = torch.zeros(len(batch), width)
        for i, (completion, result) in enumerate(zip(completions, results)):
            if isinstance(result, BaseException):
                self._failure(comp, result, repr(completion.text[:200]))
                continue
            values = [0.0 if v is None else float(v) for v in result]
            if len(values) != len(completion.token_ids):
                raise RLTuneError(
                    f"token-level reward {comp.name!r} returned {len(values)} values for "
                    f"{len(completion.token_ids)} tokens"
                )
            rewards[i, : len(values)] = torch.tensor(values)
        batch.reward_components[comp.name] = rewards.sum(-1)
        for c, value in zip(completions, rewards.sum(-1).tolist()):
            c.rewards[comp.name] = value
        returns = comp.weight * discounted_returns(rewards, comp.gamma)
        batch.token_returns = returns if batch.token_returns is None else batch.token_returns + returns

    def _run(self, comp: _Component, calls: list[tuple]) -> list:
        if comp.is_async:
            return asyncio.run(self._gather_async(comp.fn, calls))
        return self._gather_threads(comp.fn, calls)

    def _check(self, comp: _Component, result: Any, label: str, size: int) -> dict[str, list[float]]:
        """One call's result as {'score': [...], extra: [...]}, each a list of `size` floats.

        Failures score 0 (or raise, with on_error=fail)."""
        if isinstance(result, BaseException):
            self._failure(comp, result, label)
            return {"score": [0.0] * size}
        named = result if isinstance(result, dict) else {"score": result}
        if "score" not in named:
            raise RLTuneError(f"reward {comp.name!r} returned a dict without a 'score' entry: {sorted(named)}")
        out = {}
        for key, value in named.items():
            values = value if comp.group else [value]
            scores = [0.0 if v is None else float(v) for v in values]
            if not all(math.isfinite(v) for v in scores):
                self._failure(comp, ValueError(f"non-finite {key} {scores}"), label)
                return {"score": [0.0] * size}
            if len(scores) != size:
                raise RLTuneError(f"group reward {comp.name!r} returned {len(scores)} {key}s for a group of {size}")
            out[key] = scores
        return out

    def _failure(self, comp: _Component, exc: BaseException, label: str) -> None:
        """Count and log a failed reward call (it scores 0), or stop with on_error=fail."""
        self.errors += 1
        kind = "timed out" if isinstance(exc, TimeoutError) else f"raised {exc!r}"
        if self.on_error == "fail":
            raise RLTuneError(f"reward {comp.name!r} {kind} on {label}") from exc
        log.warning("reward %r %s on %s; scored 0", comp.name, kind, label)

    def _gather_threads(self, fn: Callable, calls: list[tuple]) -> list:
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.max_threads)
        futures = [executor.submit(fn, *args) for args in calls]
        results: list[Any] = []
        for future in futures:
            try:
                results.append(future.result(timeout=self.timeout_s))
            except concurrent.futures.TimeoutError:
                results.append(TimeoutError())
            except Exception as exc:
                results.append(exc)
        # A hung sync reward cannot be killed from here; don't wait for it.
        executor.shutdown(wait=False, cancel_futures=True)
        return results

    async def _gather_async(self, fn: Callable, calls: list[tuple]) -> list:
        async def one(args: tuple) -> Any:
            try:
                return await asyncio.wait_for(fn(*args), timeout=self.timeout_s)
            except asyncio.TimeoutError:
                return TimeoutError()
            except Exception as exc:
                return exc

        return await asyncio.gather(*(one(args) for args in calls))
