"""Asynchronous rollouts (train.async_steps = k >= 1): sampling overlaps the policy update.

A producer thread owns the rollout engine. It samples and scores the batch of step s from the weights of
version max(s - k, first), version v being the policy after v updates and `first` the version the run
started or resumed at. The schedule depends on step numbers only, never on the threads' timing, so with
fixed seeds an asynchronous run samples the same completions every time. After each update the trainer
hands the new version over as a copy of the policy (`publish`); the producer loads the copy it needs into
the engine before sampling, and the trainer takes the batches in step order (`take`). The producer runs at
most k + 1 batches ahead of the update, and no batch is more than k versions old when it is trained on.

Resume: the batches of steps s .. s+k-1 are already sampled when step s's checkpoint is written, from
weights the checkpoint no longer holds, so they are checkpointed with it (`in_flight`, `batch_state`) and
trained on after a resume, exactly as in the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from rltune.batch import RolloutBatch

if TYPE_CHECKING:
    from rltune.rollout.stage import RolloutStage


@dataclass
class Produced:
    """A sampled and scored batch, its rollout metrics, and the data position after its prompts."""

    batch: RolloutBatch
    metrics: dict[str, float]
    data_after: dict[str, int]


def policy_copy(policy: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of the policy's weights for the engine to load (or, the hf engine, to sample from)."""
    with torch.no_grad():
        frozen = copy.deepcopy(policy)
    return frozen.eval().requires_grad_(False)


class AsyncRollouts:
    def __init__(
        self, stage: RolloutStage, weights: torch.nn.Module, steps: int, k: int, first: int, in_flight: list[Produced]
    ):
        """`stage` samples and scores each batch with its engine; `weights`: a copy of the policy at version
        `first` (policy_copy); the batches of steps first .. first + len(in_flight) - 1 are `in_flight`."""
        self.stage, self.k, self.first, self.steps = stage, k, first, steps
        self.changed = threading.Condition()
        self.engine_lock = threading.Lock()  # held while the engine samples; the eval takes it too
        self.pauses = 0  # evals waiting for the engine: the producer lets them go first
        self.ready: dict[int, Produced] = {first + i: p for i, p in enumerate(in_flight)}
        self.snapshots: dict[int, torch.nn.Module] = {first: weights}
        self.engine_version: int | None = None  # the version the engine holds; None: unknown, load it again
        self.taken_data_after: dict[str, int] = stage.data.state_dict()
        self.error: BaseException | None = None
        self.closed = False
        self.thread = threading.Thread(
            target=self._produce, args=(first + len(in_flight),), name="rltune-rollouts", daemon=True
        )
        self.thread.start()

    def version_for(self, step: int) -> int:
        return max(self.first, step - self.k)

    def publish(self, version: int, policy: torch.nn.Module) -> None:
        """The policy after `version` updates, for the batch of step version + k."""
        frozen = policy_copy(policy)
        with self.changed:
            self.snapshots[version] = frozen
            self.changed.notify_all()

    def take(self, step: int) -> tuple[Produced, float]:
        """The batch of `step` and the seconds the update waited for it."""
        started = time.perf_counter()
        with self.changed:
            self.changed.wait_for(lambda: step in self.ready or self.error is not None)
            if step not in self.ready:
                raise self.error
            produced = self.ready.pop(step)
        self.taken_data_after = produced.data_after
        return produced, time.perf_counter() - started

    def in_flight(self, step: int) -> tuple[list[Produced], dict[str, int]]:
        """For step `step`'s checkpoint: the batches of steps step .. step+k-1 (waiting for those still being
        sampled), and the data position after the last of them."""
        wanted = range(step, min(step + self.k, self.steps))
        with self.changed:
            self.changed.wait_for(lambda: all(s in self.ready for s in wanted) or self.error is not None)
            if self.error is not None:
                raise self.error
            batches = [self.ready[s] for s in wanted]
        return batches, batches[-1].data_after if batches else self.taken_data_after

    @contextlib.contextmanager
    def engine_paused(self):
        """The engine is the caller's (the periodic eval) from the end of the batch being sampled until the
        block ends; the producer then loads its version again."""
        with self.changed:
            self.pauses += 1
        try:
            with self.engine_lock:
                try:
                    yield
                finally:
                    self.engine_version = None
        finally:
            with self.changed:
                self.pauses -= 1
                self.changed.notify_all()

    def _produce(self, start: int) -> None:
        try:
            for step in range(start, self.steps):
                version = self.version_for(step)
                started = time.perf_counter()
                with self.changed:
                    self.changed.wait_for(lambda v=version: v in self.snapshots or self.closed)
                    if self.closed:
                        return
                    weights = self.snapshots[version]
                    for old in [v for v in self.snapshots if v < version]:
                        del self.snapshots[old]
                waited = time.perf_counter() - started
                with self.changed:
                    self.changed.wait_for(lambda: self.pauses == 0 or self.closed)
                with self.engine_lock:
                    if self.engine_version != version:
                        self.stage.engine.sync_weights(weights)
                        self.engine_version = version
                    sampling_started = time.perf_counter()
                    batch, metrics = self.stage.collect(step)
                    sampling_s = time.perf_counter() - sampling_started
                batch.policy_versions = [version] * len(batch)
                metrics["async/generation_wait_s"] = waited
                metrics["time/rollout_s"] = sampling_s
                produced = Produced(batch, metrics, self.stage.data.state_dict())
                with self.changed:
                    self.ready[step] = produced
                    self.changed.notify_all()
        except BaseException as exc:  # handed to the trainer, which raises it at its next take
            with self.changed:
                self.error = exc
                self.changed.notify_all()

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.thread.join(timeout=60)


# Fields of a scored RolloutBatch kept in a checkpoint (plain types and tensors: trainer_state.pt loads
# with weights_only)
_LIST_FIELDS = ("prompt_ids", "completion_ids", "completion_texts", "sampling_logprobs", "finish_reasons",
                "group_ids", "rows", "policy_versions", "model_masks", "turns", "episode_stats")  # fmt: skip


def produced_state(produced: Produced) -> dict[str, Any]:
    batch = produced.batch
    return {
        **{name: getattr(batch, name) for name in _LIST_FIELDS},
        "rewards": batch.rewards,
        "reward_components": dict(batch.reward_components),
        "token_returns": batch.token_returns,
        "metrics": dict(produced.metrics),
        "data_after": dict(produced.data_after),
    }


def produced_from_state(state: dict[str, Any]) -> Produced:
    batch = RolloutBatch(
        **{name: state.get(name) for name in _LIST_FIELDS},  # checkpoints from before multi-turn lack some
        rewards=state["rewards"],
        reward_components=state["reward_components"],
        token_returns=state["token_returns"],
    )
    return Produced(batch, state["metrics"], state["data_after"])
