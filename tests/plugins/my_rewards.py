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
