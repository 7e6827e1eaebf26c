"""The rollout stage: a step's batch, sampled and scored.

Prompts come from the data source (this process's share of the global batch), completions from the rollout
engine (one per sample, or with an environment an episode of several turns, rltune.rollout.multi_turn),
rewards from the reward pipeline; with dynamic sampling, rounds are sampled until enough groups have rewards
that differ. The trainer calls `collect(step)` once per step; the asynchronous producer
(rltune.async_rollouts) calls it on its own thread, ahead of the update. Neither the data position nor the
engine's weights are this stage's business beyond using them: the trainer syncs the weights, checkpoints
the data position.
"""

from __future__ import annotations

from typing import Any

from rltune.advantages import is_flat
from rltune.batch import RolloutBatch
from rltune.config import RecipeConfig
from rltune.data import PromptSource
from rltune.distributed import any_process
from rltune.environments import Environment
from rltune.eval.grading import grading_failures
from rltune.metrics import rollout_metrics
from rltune.reward_pipeline import RewardPipeline
from rltune.rollout.base import RolloutEngine, SamplingSettings, run_with_timeout
from rltune.rollout.multi_turn import generate_multi_turn


class RolloutStage:
    def __init__(
        self,
        cfg: RecipeConfig,
        engine: RolloutEngine,
        data: PromptSource,
        rewards: RewardPipeline,
        tokenizer: Any,
        environment: Environment | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.cfg, self.engine, self.data, self.rewards, self.tokenizer = cfg, engine, data, rewards, tokenizer
        self.environment, self.rank, self.world_size = environment, rank, world_size

    def collect(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        """Sample and score the batch of `step`, and its rollout metrics; with dynamic sampling, keep only
        groups whose rewards differ."""
        cfg, algo = self.cfg, self.cfg.algorithm
        want = cfg.train.prompts_per_step
        kept: list[RolloutBatch] = []
        flat: list[RolloutBatch] = []
        scored: list[RolloutBatch] = []
        n_kept = 0
        rounds = 0
        errors_before, grader_errors_before = self.rewards.errors, grading_failures()  # totals of the process
        for rounds in range(1, algo.max_sampling_rounds + 1):
            batch = self.generate(step, round_index=rounds - 1)
            self.rewards.score(batch)
            scored.append(batch)
            if not algo.dynamic_sampling:
                break
            spread = (
                batch.reward_components[algo.dynamic_sampling_reward].nan_to_num(0.0)  # None: counts 0
                if algo.dynamic_sampling_reward
                else batch.rewards
            )
            varied = [g for g, idx in enumerate(batch.groups()) if not is_flat(spread[idx])]
            flat_groups = sorted(set(range(batch.num_groups)) - set(varied))
            kept.append(batch.select_groups(varied))
            flat.append(batch.select_groups(flat_groups))
            n_kept += len(varied)
            # Every process samples as many rounds as the one that needs most: sharded weights make each
            # forward a collective, and a process that stopped early would leave the others waiting.
            if not any_process(n_kept < want):
                break
        if algo.dynamic_sampling:
            pool = RolloutBatch.concat(kept + flat)
            # Top up with flat groups (zero advantage) when rounds ran out, so every process trains on
            # the same number of sequences.
            batch = pool.select_groups(list(range(min(want, pool.num_groups))))
        else:
            batch = scored[0]
        all_scored = RolloutBatch.concat(scored) if len(scored) > 1 else scored[0]
        metrics = rollout_metrics(
            all_scored, self.rewards.errors - errors_before, grading_failures() - grader_errors_before
        )
        if algo.dynamic_sampling:
            metrics["dynamic_sampling/rounds"] = rounds
            metrics["dynamic_sampling/kept_groups"] = min(n_kept, want)
        return batch, metrics

    def generate(self, step: int, round_index: int) -> RolloutBatch:
        """This process's share of the next prompts, `group_size` completions each, for step `step`."""
        r = self.cfg.rollout
        ids, rows = self.data.next_batch(self.cfg.train.prompts_per_step * self.world_size)
        ids, rows = ids[self.rank :: self.world_size], rows[self.rank :: self.world_size]
        # A seed per prompt from its place in the global batch: the same samples whatever the number of
        # processes sharing that batch.
        base = r.seed if r.seed is not None else self.cfg.train.seed
        seeds = [
            hash((base, step, round_index, self.rank + self.world_size * i)) % (2**31 - 1) for i in range(len(ids))
        ]
        sampling = SamplingSettings.from_rollout(r, prompt_seeds=seeds)

        def sample() -> RolloutBatch:
            return generate_multi_turn(self.engine, self.environment, self.tokenizer, ids, rows, sampling, r.max_turns)

        if r.timeout_s is None:
            return sample()
        return run_with_timeout(
            sample,
            r.timeout_s,
            f"the {r.engine} rollout engine produced no batch in {r.timeout_s:.0f}s (rollout.timeout_s); "
            "it is stuck or far slower than expected",
            on_this_thread=True,
        )
