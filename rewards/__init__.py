"""Rewards, imported as `rltune.rewards`: the plug-in point for scoring completions.

A reward is a callable, plain or `async def`, named in a recipe by registered name or
`package.module:attr`. A class is instantiated with the recipe's `kwargs`; a function is used as is.

- Per-sample: `reward(completion: Completion, row: dict) -> float | None`.
  `row` is the prompt's dataset row (with `gold` and `prompt` added, and `messages` for a conversational
  one). None means the reward does not apply to that sample (as in trl): it adds nothing to the sample's
  weighted sum and is left out of the reward's logged mean; a sample no reward applies to scores 0, with a
  warning.
- trl style, unchanged: a function that names `completions` (or `prompts`, `completion_ids`) and takes
  `**kwargs`, e.g. `def accuracy(completions, solution, **kwargs) -> list[float | None]`. It is called once
  per batch with keyword lists as trl's GRPOTrainer calls it: `prompts`, `completions` (strings; for a
  conversational dataset each a list of messages: one assistant message, or a multi-turn episode's assistant
  and tool messages), `completion_ids` and every dataset column.
  Its required keywords are checked against the dataset's columns before any model loads.
- Group (set `group = True` on the callable or class): `reward(completions: list[Completion], row)`
  -> one float per completion. Group rewards run after the per-sample ones and can read their scores
  in `completion.rewards` (name them in a `needs_rewards` attribute to have the recipe checked).
- Multi-turn episodes (rollout.environment): `completion.text` is the whole trajectory, `completion.turns`
  its messages, `completion.answer_text` the model's last turn (where the built-in answer rewards and
  `rltune eval` read the answer) and `completion.model_text` the model's turns without the observations.
- Either kind may return a dict instead: its 'score' entry is the reward, other entries (numbers, or
  lists for a group) are logged as `reward/<name>/<key>`.

A reward whose calls fail in a step more often than reward_options.max_error_fraction (default 0.5) stops
the run before that step's update, with the first failure's traceback; rarer failures score 0 and are
counted in `reward/errors` (per step). The built-in rewards below use exactly this mechanism.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rltune.registry import Registry

REWARDS: Registry = Registry(
    "reward",
    builtin_modules=(
        "rltune.rewards.math_accuracy",
        "rltune.rewards.format",
        "rltune.rewards.diversity_partition",
        "rltune.rewards.length",
        "rltune.rewards.repetition",
        "rltune.rewards.thinking_efficiency",
        "rltune.rewards.digit_sum",
        "rltune.rewards.final_number",
        "rltune.rewards.number_between",
        "rltune.rewards.reward_model",
        "rltune.rewards.llm_judge",
    ),
)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
    """'stop' or 'length' (truncated at rollout.max_tokens)."""
    rewards: dict[str, float] = field(default_factory=dict)
    """Scores of the per-sample rewards (unweighted), filled before group rewards run."""
    turns: list[dict[str, str]] | None = None
    """A multi-turn episode (rollout.environment) as messages: role 'assistant' for the model's turns, 'tool'
    for the environment's observations; `text` is their contents joined. None for a single completion."""

    @property
    def answer_text(self) -> str:
        """Where the answer is read: the model's last turn (as `rltune eval` grades it), or the completion."""
        return self.text if self.turns is None else final_model_turn(self.turns)

    @property
    def model_text(self) -> str:
        """What the model itself wrote: its turns joined, without the observations between them."""
        if self.turns is None:
            return self.text
        return "".join(m["content"] for m in self.turns if m["role"] == "assistant")


def final_model_turn(turns: list[dict[str, str]]) -> str:
    """The content of an episode's last assistant message: the answer of a multi-turn episode, never a tool's
    output (a tool printing `\\boxed{...}` is not the model answering)."""
    return next((m["content"] for m in reversed(turns) if m["role"] == "assistant"), "")


__all__ = ["REWARDS", "Completion", "final_model_turn"]
