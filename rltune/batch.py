"""`RolloutBatch`: the one object that travels through every stage of an RL step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RolloutBatch:
    """Completions of a batch of prompts, `group_size` per prompt, stored group by group.

    Per-sample lists all have one entry per completion; sample i belongs to prompt `group_ids[i]`,
    whose dataset row is `rows[group_ids[i]]`. Stages fill in `rewards`, `reward_components`,
    `advantages` and may keep their own data in `extras`.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    completion_texts: list[str]
    sampling_logprobs: list[list[float]]
    """Log-probability the sampler gave each generated token (after temperature)."""
    finish_reasons: list[str]
    """'stop' (end of sequence or a stop string) or 'length' (hit max_tokens)."""
    group_ids: list[int]
    rows: list[dict[str, Any]]
    rewards: torch.Tensor | None = None
    reward_components: dict[str, torch.Tensor] = field(default_factory=dict)
    advantages: torch.Tensor | None = None
    token_returns: torch.Tensor | None = None
    """[N, T] weighted discounted returns of token-level reward streams (None without such rewards);
    added to the sequence advantages token by token."""
    policy_versions: list[int] | None = None
    """Per sample, the policy version that sampled it: the number of updates behind its weights (set by the
    trainer; a batch trained at step s has s - version updates of staleness)."""
    model_masks: list[list[int]] | None = None
    """Multi-turn samples (rollout.environment): per completion token, 1 where the model sampled it and 0
    where the environment wrote it (a tool's output). Those get no gradient, no entropy, KL or other loss
    term, and their sampling logprobs are placeholders. None: every token is the model's."""
    turns: list[list[dict[str, str]]] | None = None
    """Multi-turn samples: each sample's trajectory as messages ({"role": "assistant" or "tool",
    "content"}), the completion text split by who wrote it."""
    episode_stats: list[dict[str, float]] | None = None
    """Multi-turn samples: the environment's counters of each episode (tool calls, errors, ...)."""
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def num_groups(self) -> int:
        return len(self.rows)

    def groups(self) -> list[list[int]]:
        """Sample indices of each group, in group order."""
        out: list[list[int]] = [[] for _ in self.rows]
        for i, g in enumerate(self.group_ids):
            out[g].append(i)
        return out

    def row_of(self, i: int) -> dict[str, Any]:
        return self.rows[self.group_ids[i]]

    def completion_lengths(self) -> torch.Tensor:
        return torch.tensor([len(c) for c in self.completion_ids], dtype=torch.float32)

    def model_mask(self, i: int) -> list[int]:
        """Sample i's completion tokens: 1 for the model's own, 0 for the environment's."""
        return [1] * len(self.completion_ids[i]) if self.model_masks is None else self.model_masks[i]

    def model_token_count(self, i: int) -> int:
        """The completion tokens of sample i the model sampled (all but the environment's)."""
        return len(self.completion_ids[i]) if self.model_masks is None else sum(self.model_masks[i])

    def select_groups(self, keep: list[int]) -> RolloutBatch:
        """A new batch with only the given groups (renumbered 0..len(keep)-1)."""
        index = {g: new for new, g in enumerate(keep)}
        samples = [i for i, g in enumerate(self.group_ids) if g in index]
        return self._take(samples, [index[self.group_ids[i]] for i in samples], [self.rows[g] for g in keep])

    def select_samples(self, samples: list[int]) -> RolloutBatch:
        """A new batch with only the given samples (in that order); groups and rows stay as they are."""
        return self._take(samples, [self.group_ids[i] for i in samples], list(self.rows))

    def _take(self, samples: list[int], group_ids: list[int], rows: list[dict[str, Any]]) -> RolloutBatch:
        return RolloutBatch(
            prompt_ids=[self.prompt_ids[i] for i in samples],
            completion_ids=[self.completion_ids[i] for i in samples],
            completion_texts=[self.completion_texts[i] for i in samples],
            sampling_logprobs=[self.sampling_logprobs[i] for i in samples],
            finish_reasons=[self.finish_reasons[i] for i in samples],
            group_ids=group_ids,
            rows=rows,
            rewards=None if self.rewards is None else self.rewards[samples],
            reward_components={k: v[samples] for k, v in self.reward_components.items()},
            advantages=None if self.advantages is None else self.advantages[samples],
            token_returns=None if self.token_returns is None else self.token_returns[samples],
            policy_versions=None if self.policy_versions is None else [self.policy_versions[i] for i in samples],
            model_masks=None if self.model_masks is None else [self.model_masks[i] for i in samples],
            turns=None if self.turns is None else [self.turns[i] for i in samples],
            episode_stats=None if self.episode_stats is None else [self.episode_stats[i] for i in samples],
        )

    @staticmethod
    def concat(batches: list[RolloutBatch]) -> RolloutBatch:
        """Join batches; group ids are offset so groups stay distinct. Extras are not carried."""
        first = batches[0]
        group_ids: list[int] = []
        offset = 0
        for b in batches:
            group_ids += [g + offset for g in b.group_ids]
            offset += b.num_groups

        def cat(name: str) -> list:
            return [x for b in batches for x in getattr(b, name)]

        def cat_masks() -> list[list[int]]:
            return [b.model_mask(i) for b in batches for i in range(len(b))]

        def cat_tensor(get) -> torch.Tensor | None:
            parts = [get(b) for b in batches]
            return None if any(p is None for p in parts) else torch.cat(parts)

        return RolloutBatch(
            prompt_ids=cat("prompt_ids"),
            completion_ids=cat("completion_ids"),
            completion_texts=cat("completion_texts"),
            sampling_logprobs=cat("sampling_logprobs"),
            finish_reasons=cat("finish_reasons"),
            group_ids=group_ids,
            rows=cat("rows"),
            rewards=cat_tensor(lambda b: b.rewards),
            reward_components={
                k: torch.cat([b.reward_components[k] for b in batches]) for k in first.reward_components
            },
            advantages=cat_tensor(lambda b: b.advantages),
            token_returns=_cat_padded([b.token_returns for b in batches]),
            policy_versions=None if any(b.policy_versions is None for b in batches) else cat("policy_versions"),
            model_masks=None if all(b.model_masks is None for b in batches) else cat_masks(),
            turns=None if any(b.turns is None for b in batches) else cat("turns"),
            episode_stats=None if any(b.episode_stats is None for b in batches) else cat("episode_stats"),
        )


def _cat_padded(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """Concatenate [n_i, T_i] tensors along dim 0, right-padding to the widest with zeros."""
    if any(p is None for p in parts):
        return None
    width = max(p.shape[1] for p in parts)
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts])


@dataclass
class MicroBatch:
    """Tensors of a few samples of a `RolloutBatch`, as the model, the objective and loss terms see them.

    Token tensors are [B, T] over the completion positions only (right-padded); `indices` are the
    samples' positions in `rollout`, so a plug-in can read anything else about them there. The model's
    input is laid out in rows: one sample a row (left-padded prompt, right-padded completion), or with
    train.packing several samples one after another in a row (`pack_rows`).
    """

    input_ids: torch.Tensor
    """[R, L] the model's input rows."""
    attention_mask: torch.Tensor | None
    """[R, L] 1 on the samples' tokens, 0 on pads; None for packed rows, where `position_ids` restarting
    at 0 separate the samples."""
    completion_mask: torch.Tensor
    """[B, T] 1 on generated tokens."""
    sampling_logprobs: torch.Tensor
    """[B, T] logprobs from the rollout engine (the behaviour policy)."""
    advantages: torch.Tensor
    """[B, T] advantages broadcast to tokens."""
    indices: list[int]
    rollout: RolloutBatch
    old_logprobs: torch.Tensor | None = None
    """[B, T] the old policy of the importance ratio: the trainer's own logprobs before the update
    (algorithm.old_logprobs: recompute), else the sampler's (filled in from `sampling_logprobs`)."""
    is_weights: torch.Tensor | None = None
    """[B, T] stop-gradient importance weights pi_trainer / pi_sampler (algorithm.is_correction), or None."""
    ref_logprobs: torch.Tensor | None = None
    """[B, T] logprobs of the reference model, when a loss term needs it."""
    position_ids: torch.Tensor | None = None
    """[R, L] each input token's position in its own sample."""
    scored_at: tuple[torch.Tensor, torch.Tensor] | None = None
    """(rows, columns) in `input_ids` of the positions whose next-token distribution scores each completion
    token, in `completion_mask`'s row-major order (sample by sample)."""

    def __post_init__(self) -> None:
        if self.old_logprobs is None:
            self.old_logprobs = self.sampling_logprobs


@dataclass
class PolicyOutput:
    """What the current policy computes on a micro-batch, with gradients."""

    logprobs: torch.Tensor
    """[B, T] log-probability of each completion token (logits / temperature)."""
    entropy: torch.Tensor
    """[B, T] entropy of the next-token distribution (carries gradients only if a term asks for it)."""


class RowPacker:
    """First-fit placement of sequences into rows of a fixed width, opening rows as needed: the one placement
    rule of packed micro-batches, both when they are grouped (Trainer.micro_batches) and laid out (pack_rows)."""

    def __init__(self, width: int):
        self.width = width
        self.used: list[int] = []
        """Tokens placed in each row so far."""

    def row_for(self, length: int) -> int:
        """The row a sequence of `length` would go in: the first with room, else a new one (len(used))."""
        return next((r for r, used in enumerate(self.used) if used + length <= self.width), len(self.used))

    def place(self, length: int) -> tuple[int, int]:
        """Place a sequence of `length`; its (row, start column)."""
        row = self.row_for(length)
        if row == len(self.used):
            self.used.append(0)
        start = self.used[row]
        self.used[row] += length
        return row, start


class InputLayout:
    """The size of the model input that Trainer.collate lays out for a micro-batch, as its samples join
    it longest first: packed rows as wide as the first (longest) sample, or one row a sample padded to the
    longest prompt plus the longest completion."""

    def __init__(self, packed: bool, width: int):
        self.packer = RowPacker(width) if packed else None
        self.samples = self.prompt_width = self.completion_width = 0

    def tokens_with(self, prompt: int, completion: int) -> int:
        """Input tokens (rows x width) once a sample of these lengths has joined."""
        if self.packer is not None:
            rows = len(self.packer.used) + (self.packer.row_for(prompt + completion) == len(self.packer.used))
            return rows * self.packer.width
        return (self.samples + 1) * (max(self.prompt_width, prompt) + max(self.completion_width, completion))

    def add(self, prompt: int, completion: int) -> None:
        if self.packer is not None:
            self.packer.place(prompt + completion)
        self.samples += 1
        self.prompt_width = max(self.prompt_width, prompt)
        self.completion_width = max(self.completion_width, completion)


def pack_rows(
    sequences: list[list[int]], pad_id: int
) -> tuple[list[list[int]], list[list[int]], list[tuple[int, int]]]:
    """Lay sequences one after another into rows as wide as the longest one, each into the first row
    with room for it, longest first (first-fit decreasing). Returns the rows (pads at their ends), the
    position ids (each sequence from 0; a row's trailing pads form a sequence of their own, after
    everything else, so nothing attends to them), and each sequence's (row, start column)."""
    packer = RowPacker(max(len(seq) for seq in sequences))
    rows: list[list[int]] = []
    positions: list[list[int]] = []
    starts: list[tuple[int, int]] = [(0, 0)] * len(sequences)
    for i in sorted(range(len(sequences)), key=lambda i: -len(sequences[i])):
        seq = sequences[i]
        starts[i] = packer.place(len(seq))
        row = starts[i][0]
        if row == len(rows):
            rows.append([])
            positions.append([])
        rows[row] += seq
        positions[row] += range(len(seq))
    for ids, pos in zip(rows, positions):
        fill = packer.width - len(ids)
        ids += [pad_id] * fill
        pos += range(fill)
    return rows, positions, starts
