"""Segmentation of reasoning traces into thinking patterns: exact round trip and cue handling."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rltune.config import RewardSpec
from rltune.thinking import DEFAULT_CUES, cap_segments, segment_thinking, split_trace

R1_STYLE = (
    "<think>\nOkay, so I need 3+4. That is 7.\n\nWait, let me recount: 3, then 4 more. 7.\n\n"
    "Hmm, but is it 8? No.\nAlternatively, 4+3 = 7. But the order does not matter.\n</think>\n\n"
    "The answer is \\boxed{7}."
)


def test_r1_style_trace_is_cut_at_each_cue_and_joins_back():
    trace = split_trace(R1_STYLE)
    assert trace.head == "<think>\n"
    assert trace.tail.startswith("</think>") and trace.tail.endswith("\\boxed{7}.")
    assert trace.text == R1_STYLE
    starts = [s.lstrip()[:12] for s in trace.segments]
    assert starts == ["Okay, so I n", "Wait, let me", "Hmm, but is ", "Alternativel", "But the orde"]
    # the whitespace before a cue travels with the cue, so a prefix ends where its sentence ended
    assert trace.segments[0].endswith("That is 7.")
    assert trace.segments[1].startswith("\n\nWait")


def test_mid_sentence_cue_words_do_not_cut():
    text = "I think so, but maybe not. So we check. Waiting is fine. Waiter."
    assert segment_thinking(text, ["But", "But", "So", "Wait", "but"]) == [
        "I think so, but maybe not.",
        " So we check. Waiting is fine. Waiter.",
    ]
    # anywhere at a word boundary when sentence_start is off; never inside a word
    assert segment_thinking(text, ["but"], sentence_start=False) == [
        "I think so,",
        " but maybe not. So we check. Waiting is fine. Waiter.",
    ]


def test_prompt_opened_thinking_and_unclosed_thinking():
    opened = split_trace("Let me see. Wait, 5.</think>\\boxed{5}", ["Wait"])
    assert opened.head == "" and opened.segments == ["Let me see.", " Wait, 5."]
    unclosed = split_trace("<think>1. Wait, 2. Hmm, 3", ["Wait", "Hmm"])
    assert unclosed.tail == "" and unclosed.segments == ["1.", " Wait, 2.", " Hmm, 3"]
    assert split_trace("no thinking at all", []).segments == ["no thinking at all"]
    assert split_trace("", DEFAULT_CUES).segments == []


def test_cap_segments_merges_neighbours_keeping_the_text():
    segments = [f"s{i}." for i in range(10)]
    capped = cap_segments(segments, 4)
    assert len(capped) == 4 and "".join(capped) == "".join(segments)
    assert capped[0] == "s0.s1.s2."
    assert cap_segments(segments, 20) == segments


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["Wait", "Hmm", "But", "So", ".", "\n", " ", ", ", "</think>", "<think>"]),
            st.text(max_size=6),
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_round_trip_on_arbitrary_text(pieces, sentence_start):
    text = "".join(pieces)
    trace = split_trace(text, DEFAULT_CUES, sentence_start=sentence_start)
    assert trace.text == text
    assert all(trace.segments)
    assert "".join(cap_segments(trace.segments, 3)) == trace.thinking


def test_thinking_efficiency_rewards_stopping_once_the_answer_is_reached():
    from test_rewards import score

    texts = [
        "<think>I get 7.</think>\\boxed{7}",  # concise: the answer comes in the last pattern
        "<think>I get 7. Hmm, 7. Wait, 7.</think>\\boxed{7}",  # answer reached after 8 of 25 characters
        "<think>I get 6. Wait, 7.</think>\\boxed{7}",  # a correction: reached only at the end
        "<think>I get 7. Wait, 8.</think>\\boxed{8}",  # wrong: nothing
        "<think>I get 17. So \\boxed{7}. Wait, 7.</think>\\boxed{7}",  # 17 is not 7; a box counts
        "<think>Let me add them up. Hmm, done.</think>\\boxed{7}",  # never stated while thinking: full score
        "<think>I get 7, So sure. Wait, 7.</think>\\boxed{7}",  # a cue inside a sentence does not cut it (default)
    ]
    specs = [RewardSpec("math_accuracy"), RewardSpec("thinking_efficiency", 0.5, {"cues": ["Wait", "Hmm", "So"]})]
    batch, _ = score(specs, [texts], golds=["7"])
    got = batch.reward_components["thinking_efficiency"].tolist()
    assert got[0] == 1.0 and got[2] == 1.0 and got[3] == 0.0
    assert abs(got[1] - 8 / 25) < 1e-6
    assert abs(got[4] - len("I get 17. So \\boxed{7}.") / len("I get 17. So \\boxed{7}. Wait, 7.")) < 1e-6
    assert got[5] == 1.0
    assert abs(got[6] - len("I get 7, So sure.") / len("I get 7, So sure. Wait, 7.")) < 1e-6
    assert batch.rewards[:2].tolist() == pytest.approx([1.5, 1.0 + 0.5 * got[1]])
