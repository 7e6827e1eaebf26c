"""Supervised fine-tuning: plain cross-entropy or Light-IF's entropy-preserving SFT (arXiv 2508.03178).

Entropy-SFT trains only on the `token_ratio` share of response tokens with the highest
ce_t - entropy_coef * H_t: hard tokens the model is confident about are kept, tokens where it is
already uncertain are skipped, so fine-tuning does not collapse the policy's entropy before RL.

`rltune sft RECIPE [key=value ...]` runs an SFT recipe (sections model, data, sft, train); the CPU
demo's warm-up uses the same loss function.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from rltune.config import DataConfig, ModelConfig
from rltune.errors import ConfigError
from rltune.losses import token_entropy

log = logging.getLogger(__name__)


@dataclass
class SFTLossConfig:
    loss: Literal["ce", "entropy_sft"] = "ce"
    token_ratio: float = 0.2
    """Share of response tokens trained on (Light-IF code default 0.2; its README command uses 0.8)."""
    entropy_coef: float = 1.0
    """lambda in ce - lambda * H (Light-IF code default 1.0; README command 0.8)."""

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "entropy_sft"):  # anything else would silently train entropy-SFT
            raise ConfigError(f"sft.loss must be 'ce' or 'entropy_sft', got {self.loss!r}")


@dataclass
class SFTTrainConfig:
    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    output_dir: str = "runs/sft"
    log_every: int = 10


@dataclass
class SFTRecipe:
    """`data.answer_column` is the response to train on; prompts are formatted as in RL recipes."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTLossConfig = field(default_factory=SFTLossConfig)
    train: SFTTrainConfig = field(default_factory=SFTTrainConfig)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: SFTLossConfig) -> torch.Tensor:
    """Loss over the label tokens (labels -100 are ignored); logits[:, t] predicts labels[:, t]."""
    valid = labels != -100
    if not valid.any():
        return logits.sum() * 0.0
    ce = torch.nn.functional.cross_entropy(
        logits.float().flatten(0, 1), labels.clamp(min=0).flatten(), reduction="none"
    ).view(labels.shape)
    if cfg.loss == "ce":
        return ce[valid].mean()
    with torch.no_grad():
        score = ce - cfg.entropy_coef * token_entropy(logits.float(), with_grad=False)
        score = score.masked_fill(~valid, float("-inf")).flatten()
        keep = max(1, math.floor(cfg.token_ratio * int(valid.sum())))
        chosen = torch.zeros_like(score, dtype=torch.bool)
        chosen[score.topk(keep).indices] = True
    return ce.flatten()[chosen].mean()


def sft_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int):
    """Right-padded input ids, attention mask and labels (-100 on prompt and padding), shifted so that
    logits[:, t] predicts labels[:, t]."""
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    labels = torch.full((len(prompts), width), -100, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        seq = p + r
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) - 1 : len(seq) - 1] = torch.tensor(r)
        attention[i, : len(seq)] = 1
    return ids, attention, labels


def run_sft(recipe: SFTRecipe) -> dict[str, float]:
    """Train, save the model and tokenizer to train.output_dir, return the first and last loss."""
    from rltune.data import PromptSource
    from rltune.models import load_policy, load_tokenizer

    t = recipe.train
    if not 0 < recipe.sft.token_ratio <= 1:
        raise ConfigError(f"sft.token_ratio must be in (0, 1], got {recipe.sft.token_ratio}")
    torch.manual_seed(t.seed)
    tokenizer = load_tokenizer(recipe.model.path, recipe.model.trust_remote_code)
    data = PromptSource(recipe.data, tokenizer, seed=t.seed)
    model = load_policy(recipe.model)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=t.lr, weight_decay=t.weight_decay
    )
    eos = tokenizer.eos_token_id
    losses = []
    for step in range(1, t.steps + 1):
        prompt_ids, rows = data.next_batch(t.batch_size)
        responses = [tokenizer(r["gold"], add_special_tokens=False)["input_ids"] + [eos] for r in rows]
        ids, attention, labels = sft_batch(prompt_ids, responses, tokenizer.pad_token_id)
        loss = sft_loss(model(input_ids=ids, attention_mask=attention).logits, labels, recipe.sft)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm or math.inf)  # 0: no clipping
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % t.log_every == 0 or step == t.steps:
            log.info("sft step %d loss=%.4f", step, loss.item())
    model.eval()
    Path(t.output_dir).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(t.output_dir)
    tokenizer.save_pretrained(t.output_dir)
    return {"loss_first": losses[0], "loss_last": losses[-1]}
