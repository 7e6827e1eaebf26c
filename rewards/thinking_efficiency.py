"""Online counterpart of DTO's stop point ("Don't Think Longer, Think Wisely"): reward correct
completions whose reasoning stops soon after it first reaches the answer.

The thinking is cut into patterns with the same segmentation as `rltune prune` (rltune.thinking).
The answer counts as reached in the first segment that states it: a boxed value there, or else the
last number of the segment, equivalent to the gold under the eval harness's grader. The score is
`scale * reached / total`, lengths in characters of the thinking: 1 when the answer only appears in
the last pattern, near 0 when the trace kept going long after it had the answer. A trace that never
states the answer while thinking scores `scale` (nothing came after the answer). Wrong completions score
0. This is a cheap proxy for DTO's Monte-Carlo estimate, which needs extra sampling per boundary.
"""

from __future__ import annotations

import re

from rltune.eval.grading import equivalent, extract_boxed
from rltune.rewards import REWARDS, Completion
from rltune.thinking import DEFAULT_CUES, split_trace

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


@REWARDS.register("thinking_efficiency")
class ThinkingEfficiency:
    needs_gold = True  # reads row['gold']: refused on a prompt-only dataset (data.answer_column: null)
    needs_rewards: tuple[str, ...]

    def __init__(
        self,
        scale: float = 1.0,
        cues: list[str] | None = None,
        think_open: str = "<think>",
        think_close: str = "</think>",
        sentence_start: bool = True,
        correct_reward: str = "math_accuracy",
    ):
        self.scale = scale
        self.cues = list(DEFAULT_CUES if cues is None else cues)
        self.think_open, self.think_close, self.sentence_start = think_open, think_close, sentence_start
        self.correct_reward = correct_reward
        self.needs_rewards = (correct_reward,)

    def states_answer(self, segment: str, gold: str) -> bool:
        candidate = extract_boxed(segment)
        if candidate is None:
            numbers = NUMBER.findall(segment)
            candidate = numbers[-1] if numbers else None
        if candidate is None:
            return False
        try:  # plain numbers on both sides: no need to ask the grader's worker processes
            return float(candidate) == float(gold)
        except ValueError:
            return equivalent(candidate, gold)

    def reached_fraction(self, text: str, gold: str) -> float:
        """Share of the thinking (in characters) up to the end of the first segment stating the answer."""
        trace = split_trace(text, self.cues, self.think_open, self.think_close, self.sentence_start)
        total = len(trace.thinking)
        done = 0
        for segment in trace.segments:
            done += len(segment)
            if self.states_answer(segment, gold):
                return done / total
        return 1.0

    def __call__(self, completion: Completion, row: dict) -> float:
        if completion.rewards[self.correct_reward] <= 0:
            return 0.0
        return self.scale * self.reached_fraction(completion.text, str(row["gold"]))
