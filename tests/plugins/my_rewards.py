"""User-style reward plug-ins used by the tests (the way a user writes one small file)."""

import asyncio
import time


def brevity(completion, row):
    return -len(completion.text) / 10


class Contains:
    def __init__(self, needle: str):
        self.needle = needle

    def __call__(self, completion, row):
        return 1.0 if self.needle in completion.text else 0.0


async def async_length(completion, row):
    await asyncio.sleep(0.01)
    return float(len(completion.token_ids))


def flaky(completion, row):
    if "bad" in completion.text:
        raise ValueError("cannot score this one")
    return 1.0


def sleepy(completion, row):
    time.sleep(3.0 if "slow" in completion.text else 0.0)
    return 1.0


async def async_sleepy(completion, row):
    await asyncio.sleep(3.0 if "slow" in completion.text else 0.0)
    return 1.0


def maybe_none(completion, row):
    return None if "skip" in completion.text else 2.0


class RankInGroup:
    """A group reward: 1 for the group's shortest completion(s), 0 otherwise; reads a per-sample score."""

    group = True

    def __call__(self, completions, row):
        lengths = [len(c.text) for c in completions]
        assert all("brevity" in c.rewards for c in completions)
        return [1.0 if n == min(lengths) else 0.0 for n in lengths]


class GroupSizeRecorder:
    """A group reward that appends (process rank, group size, prompt) to $RLTUNE_TEST_GROUP_LOG and scores 0."""

    group = True

    def __call__(self, completions, row):
        import json
        import os

        with open(os.environ["RLTUNE_TEST_GROUP_LOG"], "a") as f:
            f.write(
                json.dumps({"rank": int(os.environ.get("RANK", 0)), "size": len(completions), "prompt": row["prompt"]})
                + "\n"
            )
        return [0.0] * len(completions)


def not_a_number(completion, row):
    return float("nan")


class WrongCount:
    group = True

    def __call__(self, completions, row):
        return [1.0]


def variety(completion, row):
    """Distinct characters / 10: real-valued, so the samples of a group rarely tie."""
    return len(set(completion.text)) / 10


def variety_on_odd_sums(completion, row):
    """`variety` for prompts with an odd gold answer; 1.0 for every sample of an even one (a flat group)."""
    return variety(completion, row) if int(row["gold"]) % 2 else 1.0


class TokenResidue:
    """A token-level reward: (token id mod 3) / 10 for every generated token, discounted by gamma 0.9."""

    token_level = True
    gamma = 0.9

    def __call__(self, completion, row):
        return [(t % 3) / 10 for t in completion.token_ids]


class ConcurrencyProbe:
    """An async reward that records how many of its calls were in flight at once (`max_in_flight`)."""

    def __init__(self):
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, completion, row):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.05)
        self.in_flight -= 1
        return 1.0


def sleeps_10s(completion, row):
    """Marks $RLTUNE_TEST_MARK (when set) as started, then takes 10 s: a step that outlasts a short grace."""
    import os
    from pathlib import Path

    if os.environ.get("RLTUNE_TEST_MARK"):
        Path(os.environ["RLTUNE_TEST_MARK"]).touch()
    time.sleep(10.0)
    return 1.0


def always_raises(completion, row):
    raise ValueError("this reward fails on every sample")
