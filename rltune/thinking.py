"""Reasoning traces cut into thinking patterns at cue words (DTO, "Don't Think Longer, Think Wisely").

A completion is `head + thinking + tail`: `head` is an opening `<think>` (absent when the chat
template already opened it), `thinking` runs up to the closing tag, `tail` is the closing tag and the
answer. The thinking is cut before every cue word that opens a new pattern ("Wait", "Alternatively",
...), so `"".join(segments) == thinking` always: nothing is lost, and any subset of segments joins
back into a trace the model could have written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_CUES = [
    "Wait",
    "Alternatively",
    "Hmm",
    "Let me check",
    "Let me verify",
    "Let me double-check",
    "But",
    "However",
    "Actually",
    "Oh",
    "So",
    "Therefore",
]
"""Openers of a new thinking pattern: self-verification, alternatives, reflection and summaries."""


@dataclass
class Trace:
    head: str
    """The opening think tag (with the whitespace after it), or '' when the prompt opened it."""
    segments: list[str]
    tail: str
    """The closing think tag and everything after it; '' when the thinking never closed."""

    @property
    def thinking(self) -> str:
        return "".join(self.segments)

    @property
    def text(self) -> str:
        return self.head + self.thinking + self.tail


def cue_starts(thinking: str, cues: list[str], sentence_start: bool = True) -> list[int]:
    """Where new segments start: before the whitespace that precedes a cue (the whitespace travels with
    the cue, so a prefix ends where its sentence ended). A cue counts as a whole word only; with
    `sentence_start`, only after '.', '!', '?', ':', a line break or the start of the text, so that a
    'but' inside a sentence does not cut it."""
    if not cues:
        return []
    words = "|".join(re.escape(c) for c in sorted(cues, key=len, reverse=True))
    starts = set()
    for match in re.finditer(rf"(?<!\w)(?:{words})(?!\w)", thinking):
        cut = match.start()
        while cut > 0 and thinking[cut - 1].isspace():
            cut -= 1
        gap = thinking[cut : match.start()]
        if cut == 0 or not sentence_start or "\n" in gap or thinking[cut - 1] in ".!?:":
            starts.add(cut)
    return sorted(starts - {0})


def segment_thinking(thinking: str, cues: list[str] | None = None, sentence_start: bool = True) -> list[str]:
    """Cut `thinking` before each cue; the pieces join back into `thinking` exactly."""
    bounds = [0, *cue_starts(thinking, DEFAULT_CUES if cues is None else cues, sentence_start), len(thinking)]
    return [thinking[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def split_trace(
    completion: str,
    cues: list[str] | None = None,
    think_open: str = "<think>",
    think_close: str = "</think>",
    sentence_start: bool = True,
) -> Trace:
    """A completion as head, thinking segments and tail; `split_trace(c).text == c`."""
    stripped = completion.lstrip()
    head = ""
    if think_open and stripped.startswith(think_open):
        after = len(completion) - len(stripped) + len(think_open)
        head = completion[: after + len(completion[after:]) - len(completion[after:].lstrip())]
    rest = completion[len(head) :]
    close = rest.find(think_close) if think_close else -1
    thinking, tail = (rest, "") if close < 0 else (rest[:close], rest[close:])
    return Trace(head, segment_thinking(thinking, cues, sentence_start), tail)


def cap_segments(segments: list[str], most: int) -> list[str]:
    """Merge neighbours so that at most `most` segments remain (bounds the Monte-Carlo cost of long
    traces); the text is unchanged."""
    if most < 1 or len(segments) <= most:
        return list(segments)
    size, extra = divmod(len(segments), most)
    out, start = [], 0
    for i in range(most):
        end = start + size + (1 if i < extra else 0)
        out.append("".join(segments[start:end]))
        start = end
    return out
