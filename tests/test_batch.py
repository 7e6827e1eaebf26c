"""Joining rollout batches (dynamic sampling's refills): groups stay apart, per-token returns of different
lengths line up, and a part without a field leaves it empty rather than misaligned."""

from __future__ import annotations

import torch

from rltune.batch import RolloutBatch


def _batch(groups: int, size: int, width: int | None, start: float, versions: bool = True) -> RolloutBatch:
    n = groups * size
    return RolloutBatch(
        prompt_ids=[[1]] * n, completion_ids=[[2] * (i + 1) for i in range(n)],
        completion_texts=[f"t{i}" for i in range(n)],
        sampling_logprobs=[[-1.0]] * n, finish_reasons=["stop"] * n, group_ids=[i // size for i in range(n)],
        rows=[{"prompt": f"p{start}-{g}"} for g in range(groups)], rewards=torch.arange(n) + start,
        reward_components={"acc": torch.arange(n) + start}, advantages=torch.zeros(n) + start,
        token_returns=None if width is None else torch.full((n, width), start),
        policy_versions=[int(start)] * n if versions else None,
    )  # fmt: skip


def test_concat_offsets_groups_and_pads_token_returns_to_the_widest():
    a, b = _batch(2, 2, 3, 1.0), _batch(1, 2, 5, 7.0)
    joined = RolloutBatch.concat([a, b])
    assert joined.group_ids == [0, 0, 1, 1, 2, 2] and joined.num_groups == 3
    assert joined.groups() == [[0, 1], [2, 3], [4, 5]]
    assert joined.rewards.tolist() == [1, 2, 3, 4, 7, 8] and joined.reward_components["acc"].tolist() == [
        1,
        2,
        3,
        4,
        7,
        8,
    ]
    assert joined.token_returns.shape == (6, 5)
    assert joined.token_returns[:4].tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0]] * 4  # right-padded with zeros
    assert joined.token_returns[4:].tolist() == [[7.0] * 5] * 2
    assert joined.policy_versions == [1, 1, 1, 1, 7, 7]
    assert [r["prompt"] for r in joined.rows] == ["p1.0-0", "p1.0-1", "p7.0-0"]


def test_concat_leaves_out_what_a_part_lacks():
    joined = RolloutBatch.concat([_batch(1, 2, 4, 1.0), _batch(1, 2, None, 2.0, versions=False)])
    assert joined.token_returns is None and joined.policy_versions is None
    assert joined.advantages.tolist() == [1.0, 1.0, 2.0, 2.0]
