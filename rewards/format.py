"""Format reward: the completion ends with a boxed final answer (and closes its think block)."""

from __future__ import annotations

from rltune.eval.grading import extract_boxed
from rltune.rewards import REWARDS, Completion


@REWARDS.register("format")
def format_reward(completion: Completion, row: dict) -> float:
    """1 if a non-empty \\boxed{} answer follows any <think> block and the completion was not truncated (in
    a multi-turn episode: in the model's last turn)."""
    text = completion.answer_text
    if "<think>" in text and "</think>" not in text:
        return 0.0
    if completion.finish_reason == "length":
        return 0.0
    return 1.0 if extract_boxed(text) else 0.0
