"""Multi-turn rollouts: the model and an environment (rltune.environments) take turns, on any engine.

Token in, token out: a trajectory is the prompt's ids, then the exact ids the engine sampled for each model
turn, then the ids of each observation (the environment's text, tokenized alone); the model's text is
never tokenized again, so the trainer scores the very tokens that were sampled. Each turn after the first
samples all open trajectories of the batch in one engine call, each with its own seed and its own budget.

Bounds: `rollout.max_tokens` is the whole trajectory's budget after the prompt, model and observation
tokens together (so the update's tensors never grow past it); `rollout.max_turns` is the most model turns.
An observation that does not fit is cut to the budget and ends the episode ("length").
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rltune.batch import RolloutBatch
from rltune.environments import Environment
from rltune.rollout.base import RolloutEngine, SamplingSettings


@dataclass
class Trajectory:
    group: int
    prompt: list[int]
    seed: int
    state: Any
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    turns: list[dict[str, str]] = field(default_factory=list)
    finish: str = "stop"

    def add(self, role: str, text: str, tokens: list[int], logprobs: list[float] | None = None) -> None:
        self.tokens += tokens
        self.mask += [int(logprobs is not None)] * len(tokens)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(tokens)
        self.turns.append({"role": role, "content": text})


def generate_multi_turn(
    engine: RolloutEngine,
    env: Environment | None,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    rows: list[dict[str, Any]],
    sampling: SamplingSettings,
    max_turns: int,
    workers: int = 8,
) -> RolloutBatch:
    """`sampling.n` trajectories per prompt, each up to `max_turns` model turns and `sampling.max_tokens`
    tokens after the prompt; environment steps run `workers` at a time. Without an environment (`env`
    None): one completion per sample, the engine's own call, so training and eval have one rollout path."""
    if env is None:
        return engine.generate(prompt_ids, rows, sampling)
    sampling = dataclasses.replace(sampling, stop=list(dict.fromkeys([*sampling.stop, *env.stop])))
    first = engine.generate(prompt_ids, rows, sampling)
    seeds = sampling.seeds(len(prompt_ids))
    trajectories: list[Trajectory] = []
    for i, group in enumerate(first.group_ids):
        # the j-th sample of its prompt: later turns' seeds do not depend on which prompts share the batch
        j = sum(t.group == group for t in trajectories)
        seed = hash((seeds[group] or 0, j)) % (2**31 - 1)
        trajectory = Trajectory(group, list(first.prompt_ids[i]), seed, env.start(rows[group]))
        trajectory.add("assistant", first.completion_texts[i], first.completion_ids[i], first.sampling_logprobs[i])
        trajectory.finish = first.finish_reasons[i]
        trajectories.append(trajectory)
    going = [t for t in trajectories if t.finish == "stop"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for turn in range(2, max_turns + 1):
            observations = list(pool.map(lambda t: env.step(t.state, t.turns[-1]["content"]), going))
            waiting = []
            for t, observation in zip(going, observations):
                if observation is None:
                    continue
                ids = tokenizer(observation, add_special_tokens=False)["input_ids"]
                room = sampling.max_tokens - len(t.tokens)
                if len(ids) >= room:  # no room left for the model to answer
                    t.add("tool", tokenizer.decode(ids[:room]), ids[:room])
                    t.finish = "length"
                    continue
                t.add("tool", observation, ids)
                waiting.append(t)
            if not waiting:
                break
            step = dataclasses.replace(
                sampling,
                n=1,
                seed=None,
                prompt_seeds=[hash((t.seed, turn)) % (2**31 - 1) for t in waiting],
                prompt_max_tokens=[sampling.max_tokens - len(t.tokens) for t in waiting],
                progress=None,
            )
            # the ids as sampled and observed, never re-tokenised
            contexts = [t.prompt + t.tokens for t in waiting]
            answers = engine.generate(contexts, [rows[t.group] for t in waiting], step)
            for t, ids, text, logprobs, finish in zip(
                waiting,
                answers.completion_ids,
                answers.completion_texts,
                answers.sampling_logprobs,
                answers.finish_reasons,
            ):
                t.add("assistant", text, list(ids), list(logprobs))
                t.finish = finish
            going = [t for t in waiting if t.finish == "stop"]
    return RolloutBatch(
        prompt_ids=[t.prompt for t in trajectories],
        completion_ids=[t.tokens for t in trajectories],
        completion_texts=["".join(m["content"] for m in t.turns) for t in trajectories],
        sampling_logprobs=[t.logprobs for t in trajectories],
        finish_reasons=[t.finish for t in trajectories],
        group_ids=[t.group for t in trajectories],
        rows=list(rows),
        model_masks=[t.mask for t in trajectories],
        turns=[t.turns for t in trajectories],
        episode_stats=[env.stats(t.state) for t in trajectories],
    )
