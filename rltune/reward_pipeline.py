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


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


class RewardPipeline:
    def __init__(self, specs: list[RewardSpec], on_error: str = "zero", timeout_s: float = 30.0, max_threads: int = 8):
        self.on_error = on_error
        self.timeout_s = timeout_s
        self.max_threads = max_threads
        self.components: list[_Component] = []
        for spec in specs:
            obj = REWARDS.get(spec.name)
            if inspect.isclass(obj):
                try:
                    fn = obj(**spec.kwargs)
                except TypeError as exc:
                    raise ConfigError(f"reward {spec.name!r}: bad kwargs {spec.kwargs}: {exc}") from exc
            elif callable(obj):
                if spec.kwargs:
                    raise ConfigError(f"reward {spec.name!r} is a function and takes no kwargs (got {spec.kwargs})")
                fn = obj
            else:
                raise ConfigError(f"reward {spec.name!r} resolved to {obj!r}, which is not callable")
            name = spec.name.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
            taken = {c.name for c in self.components}
            unique, k = name, 2
            while unique in taken:
                unique, k = f"{name}_{k}", k + 1
            group = bool(getattr(fn, "group", False) or getattr(obj, "group", False))
            self.components.append(_Component(unique, fn, spec.weight, group, _is_async(fn)))
        self.errors = 0

    def score(self, batch: RolloutBatch) -> None:
        """Fill `batch.reward_components` and `batch.rewards`."""
        completions = [
            Completion(text=t, token_ids=ids, finish_reason=f)
            for t, ids, f in zip(batch.completion_texts, batch.completion_ids, batch.finish_reasons)
        ]
        rows = [batch.row_of(i) for i in range(len(batch))]
        for comp in self.components:
            if comp.group:
                continue
            values = self._run(
                comp, [(c, r) for c, r in zip(completions, rows)], [repr(c.text[:200]) for c in completions]
            )
            for c, v in zip(completions, values):
                c.rewards[comp.name] = v
            batch.reward_components[comp.name] = torch.tensor(values, dtype=torch.float32)
        groups = batch.groups()
        for comp in self.components:
            if not comp.group:
                continue
            calls = [([completions[i] for i in idx], batch.rows[g]) for g, idx in enumerate(groups)]
            results = self._run(
                comp, calls, [f"group {g}" for g in range(len(groups))], per_group=[len(i) for i in groups]
            )
            values = torch.zeros(len(batch))
            for idx, scores in zip(groups, results):
                values[idx] = torch.tensor(scores, dtype=torch.float32)
            batch.reward_components[comp.name] = values
        batch.rewards = sum(c.weight * batch.reward_components[c.name] for c in self.components)

    def _run(self, comp: _Component, calls: list[tuple], labels: list[str], per_group: list[int] | None = None) -> list:
        """Call `comp.fn(*args)` for every args tuple; failures become 0 (or raise, with on_error=fail)."""
        if comp.is_async:
            results = asyncio.run(self._gather_async(comp.fn, calls))
        else:
            results = self._gather_threads(comp.fn, calls)
        out = []
        for i, (result, label) in enumerate(zip(results, labels)):
            size = per_group[i] if per_group else None
            out.append(self._check(comp.name, result, label, size))
        return out

    def _check(self, name: str, result: Any, label: str, size: int | None) -> Any:
        zero = 0.0 if size is None else [0.0] * size
        if isinstance(result, BaseException):
            self.errors += 1
            kind = "timed out" if isinstance(result, TimeoutError) else f"raised {result!r}"
            if self.on_error == "fail":
                raise RLTuneError(f"reward {name!r} {kind} on {label}") from result
            log.warning("reward %r %s on %s; scored 0", name, kind, label)
            return zero
        if size is None:
            return 0.0 if result is None else float(result)
        scores = [0.0 if r is None else float(r) for r in result]
        if len(scores) != size:
            raise RLTuneError(f"group reward {name!r} returned {len(scores)} scores for a group of {size}")
        return scores

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
