"""RewardPipeline: runs every configured reward over a RolloutBatch and sums them with weights.

Per-sample rewards run first (sync ones each on a daemon thread, async ones concurrently on an event loop of
their own), with trl-style batched rewards (one call for the whole batch, trl's keyword arguments), then group
rewards, one call per group. Every component is kept unweighted in `batch.reward_components` for logging;
`batch.rewards` is the weighted sum. A sample a reward returns None for ("does not apply", as in trl) counts
0 in the sum and is left out of that reward's mean.

A reward whose calls fail in a step more often than reward_options.max_error_fraction stops the run before
the update with its first exception: a broken function is never trained on as all zeros.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import numbers
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
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
    batched: bool = False
    """trl's calling convention: one call for the batch, `prompts=`, `completions=`, `completion_ids=` and
    the dataset's columns as keyword lists; returns one float or None per completion."""


TRL_ARGUMENTS = ("prompts", "completions", "completion_ids")


def is_trl_style(fn: Any) -> bool:
    """A reward written for trl's GRPOTrainer: it names `completions` (or `prompts`/`completion_ids`) as a
    parameter, where an rltune per-sample reward takes one `completion` and the row."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return any(name in params for name in TRL_ARGUMENTS)


def _check_signature(label: str, fn: Any, batched: bool) -> None:
    """Refuse, at load, a reward that cannot take the arguments it will be called with."""
    try:
        signature = inspect.signature(fn)
    except ValueError:
        return  # builtins and C callables: their calls will tell
    if batched:
        return  # its keyword arguments are checked against the dataset's columns (check_dataset)
    try:
        signature.bind(None, None)
    except TypeError as exc:
        raise ConfigError(
            f"reward {label!r} cannot be called as reward(completion, row) ({exc}); an rltune reward takes the "
            "completion and its dataset row, a group reward (group = True) the group's completions and the row, "
            "a trl reward names `completions` and takes **kwargs"
        ) from None


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + gamma * G_{t+1} along the last dimension."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:80]}{'...' if len(text) > 80 else ''} ({type(value).__name__})"


def _number(comp: "_Component", value: Any, label: str = "a completion") -> float:
    """A reward value as a float. A number is a real one: a Python or numpy bool, integer or float, or a
    one-element tensor or array holding one. Anything else (text, a complex number, a date, a list) stops the
    run naming the reward: a wrong return type is a bug in the reward, not a sample that scores 0."""
    if (isinstance(value, np.ndarray) and value.size == 1) or (isinstance(value, torch.Tensor) and value.numel() == 1):
        value = value.item()
    if isinstance(value, (numbers.Real, np.bool_)):
        try:
            return float(value)
        except OverflowError:
            raise RLTuneError(
                f"reward {comp.name!r} returned {_shown(value)} for {label}: too large for a float"
            ) from None
    raise RLTuneError(
        f"reward {comp.name!r} returned {_shown(value)} for {label}; a reward returns a number (a group reward: one "
        "number per completion; a token-level reward: one per token)"
    )


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


class RewardPipeline:
    def __init__(
        self,
        specs: list[RewardSpec],
        on_error: str = "zero",
        timeout_s: float = 30.0,
        max_error_fraction: float = 0.5,
    ):
        self.on_error = on_error
        self.timeout_s = timeout_s
        self.max_error_fraction = max_error_fraction
        self.components: list[_Component] = []
        for spec in specs:
            obj = spec.function if spec.function is not None else REWARDS.get(spec.name)
            label = spec.name or getattr(obj, "__name__", type(obj).__name__)
            if inspect.isclass(obj):
                try:
                    fn = obj(**spec.kwargs)
                except TypeError as exc:
                    raise ConfigError(f"reward {label!r}: bad kwargs {sorted(spec.kwargs)}: {exc}") from exc
                if not callable(fn):
                    raise ConfigError(
                        f"reward {label!r}: class {obj.__name__} is not callable once built; give it a "
                        "__call__(self, completion, row) that returns the reward"
                    )
            elif callable(obj):
                if spec.kwargs:
                    raise ConfigError(f"reward {label!r} is a function and takes no kwargs (got {sorted(spec.kwargs)})")
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
            batched = not group and not token_level and is_trl_style(fn)
            _check_signature(label, fn, batched)
            comp = _Component(unique, fn, spec.weight, group, _is_async(fn), token_level, gamma, batched)
            self.components.append(comp)
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

    def check_dataset(self, columns: list[str], has_gold: bool = True) -> None:
        """Refuse, before any model loads, a trl-style reward that needs a keyword the dataset cannot give,
        and a reward that reads the gold answer on a prompt-only dataset."""
        given = {*TRL_ARGUMENTS, *columns, "gold", "prompt"}
        for comp in self.components:
            if not has_gold and getattr(comp.fn, "needs_gold", False):
                raise ConfigError(
                    f"reward {comp.name!r} compares completions with the gold answer, and the dataset has none "
                    "(data.answer_column: null); set data.answer_column or use rewards that need no gold"
                )
            if not comp.batched:
                continue
            params = inspect.signature(comp.fn).parameters.values()
            missing = [
                p.name
                for p in params
                if p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                and p.name not in given
            ]
            if missing:
                raise ConfigError(
                    f"reward {comp.name!r} (trl style) takes {', '.join(missing)}, which the dataset has no column "
                    f"for; its columns are: {', '.join(columns)}"
                )

    def score(self, batch: RolloutBatch) -> None:
        """Fill `batch.reward_components` and `batch.rewards`.

        A reward may return a dict instead of a number (a group reward: a dict of lists): its 'score'
        entry is the reward, and every other entry is logged as the component `<name>/<key>`.
        """
        completions = [
            Completion(text=t, token_ids=ids, finish_reason=f, turns=None if batch.turns is None else batch.turns[i])
            for i, (t, ids, f) in enumerate(zip(batch.completion_texts, batch.completion_ids, batch.finish_reasons))
        ]
        groups = batch.groups()
        batch.token_returns = None
        # Per-sample rewards first (each call covers one sample), then group rewards (one call a group).
        for comp in sorted(self.components, key=lambda c: c.group):
            if comp.token_level:
                self._score_tokens(comp, batch, completions)
                continue
            if comp.batched:
                targets = [list(range(len(batch)))]
                calls = [(trl_arguments(batch),)]
                labels = ["the batch"]
            elif comp.group:
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
        summed = [c for c in self.components if not c.token_level]
        # None (NaN here): the reward does not apply to that sample and adds nothing to its sum
        batch.rewards = sum(c.weight * batch.reward_components[c.name].nan_to_num(0.0) for c in summed)
        if summed:
            applies = torch.stack([~batch.reward_components[c.name].isnan() for c in summed]).any(0)
            if not applies.all():
                log.warning(
                    "%d of %d samples got None from every reward (none applies to them): they score 0",
                    int((~applies).sum()),
                    len(batch),
                )

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
            if not isinstance(result, (list, tuple, torch.Tensor)):
                raise RLTuneError(
                    f"token-level reward {comp.name!r} returned {_shown(result)} for {completion.text[:80]!r}; it "
                    "returns a list with one number per generated token"
                )
            values = [0.0 if v is None else _number(comp, v) for v in result]  # a token with no reward
            if not all(math.isfinite(v) for v in values):
                self._failure(comp, ValueError(f"non-finite token rewards {values}"), repr(completion.text[:200]))
                continue
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
        """Every call of `comp`; a result is the value or the exception. Stops the run when too many failed."""
        fn = (lambda arguments: comp.fn(**arguments)) if comp.batched else comp.fn  # trl: keywords only
        if comp.is_async:
            results = self._gather_async(comp.name, fn, calls)
        else:
            results = self._gather_threads(fn, calls)
        self._stop_if_broken(comp, results)
        return results

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
            if (comp.group or comp.batched) and not isinstance(value, (list, tuple, torch.Tensor, np.ndarray)):
                kind = "trl-style reward" if comp.batched else "group reward"
                raise RLTuneError(
                    f"{kind} {comp.name!r} returned {_shown(value)} as its {key} for {label}; a {kind} returns a "
                    f"list of {size} numbers, one per completion of the {'batch' if comp.batched else 'group'}"
                )
            values = value if comp.group or comp.batched else [value]
            scores = [math.nan if v is None else _number(comp, v, label) for v in values]
            # None: the reward does not apply (NaN from here on); any other value that is not finite is a failure
            if any(not math.isfinite(v) and original is not None for v, original in zip(scores, values)):
                self._failure(comp, ValueError(f"non-finite {key} {scores}"), label)
                return {"score": [0.0] * size}
            if len(scores) != size:
                of = f"{size} completions (trl-style, one call a batch)" if comp.batched else f"a group of {size}"
                raise RLTuneError(f"reward {comp.name!r} returned {len(scores)} {key}s for {of}")
            out[key] = scores
        return out

    def _stop_if_broken(self, comp: _Component, results: list) -> None:
        """Stop before the update when more of this step's calls of `comp` failed than
        reward_options.max_error_fraction allows, with the first failure's traceback."""
        failed = [r for r in results if isinstance(r, BaseException)]
        if not failed or len(failed) / len(results) <= self.max_error_fraction:
            return
        first = failed[0]
        trace = "".join(traceback.format_exception(first)).rstrip() if first.__traceback__ else repr(first)
        raise RLTuneError(
            f"reward {comp.name!r} failed on {len(failed)} of its {len(results)} calls this step (over "
            f"reward_options.max_error_fraction={self.max_error_fraction:g}); nothing was trained on them. "
            f"The first failure:\n{trace}"
        )

    def _failure(self, comp: _Component, exc: BaseException, label: str) -> None:
        """Count and log a failed reward call (it scores 0), or stop with on_error=fail."""
        self.errors += 1
        kind = "timed out" if isinstance(exc, TimeoutError) else f"raised {exc!r}"
        if self.on_error == "fail":
            raise RLTuneError(f"reward {comp.name!r} {kind} on {label}") from exc
        log.warning("reward %r %s on %s; scored 0", comp.name, kind, label)

    def _gather_threads(self, fn: Callable, calls: list[tuple]) -> list:
        """Every call on its own daemon thread, all started at once, all given `timeout_s` together: a hung
        reward costs one timeout per batch, not one per sample, and cannot keep the process alive at exit
        (daemon threads are not joined; a thread pool's workers would be)."""
        results: list[Any] = [None] * len(calls)
        finished = [threading.Event() for _ in calls]

        def run(i: int) -> None:
            try:
                results[i] = fn(*calls[i])
            except Exception as exc:
                results[i] = exc
            finally:
                finished[i].set()

        for i in range(len(calls)):
            threading.Thread(target=run, args=(i,), daemon=True, name=f"reward-{i}").start()
        deadline = time.monotonic() + self.timeout_s
        for event in finished:
            event.wait(max(0.0, deadline - time.monotonic()))
        return [result if done.is_set() else TimeoutError() for result, done in zip(results, finished)]

    def _gather_async(self, name: str, fn: Callable, calls: list[tuple]) -> list:
        """The calls of an `async def` reward concurrently on an event loop of their own, in a daemon thread:
        a reward that blocks the loop (time.sleep instead of asyncio.sleep) times out instead of hanging."""
        results: list[Any] = [TimeoutError()] * len(calls)

        async def one(i: int) -> None:
            try:
                results[i] = await asyncio.wait_for(fn(*calls[i]), timeout=self.timeout_s)
            except asyncio.TimeoutError:
                results[i] = TimeoutError()
            except Exception as exc:
                results[i] = exc

        async def every() -> None:
            await asyncio.gather(*(one(i) for i in range(len(calls))))

        done = threading.Event()
        thread = threading.Thread(target=lambda: (asyncio.run(every()), done.set()), daemon=True, name="async-rewards")
        thread.start()
        # wait_for fires at timeout_s on a running loop; past that (plus scheduling slack) the loop is blocked
        if not done.wait(self.timeout_s * 1.1 + 1.0):
            log.warning(
                "async reward %r blocked its event loop for over %.0fs: it calls blocking code (time.sleep, a "
                "blocking request); await asyncio.sleep / an async client, or make it a plain def",
                name,
                self.timeout_s,
            )
        return list(results)


def trl_arguments(batch: RolloutBatch) -> dict[str, list]:
    """trl's keyword arguments for a batch: `prompts`, `completions` (strings; for a conversational dataset,
    each a list of messages: one assistant message, or a multi-turn episode's assistant and tool messages as
    trl's tool loop has them), `completion_ids`, and every dataset column as one list entry per completion."""
    rows = [batch.row_of(i) for i in range(len(batch))]
    conversational = bool(rows) and isinstance(rows[0].get("messages"), list)
    completions: list = list(batch.completion_texts)
    if conversational:
        completions = [
            [dict(m) for m in batch.turns[i]] if batch.turns is not None else [{"role": "assistant", "content": text}]
            for i, text in enumerate(completions)
        ]
    prompts = [row["messages"] if conversational else row["prompt"] for row in rows]
    columns = {key: [row.get(key) for row in rows] for key in rows[0]} if rows else {}
    columns.pop("messages", None)
    return {**columns, "prompts": prompts, "completions": completions, "completion_ids": batch.completion_ids}
