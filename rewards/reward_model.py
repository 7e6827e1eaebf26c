"""A neural reward model's score of prompt and completion: a sequence-classification model from a path,
batched on its own device (as trl scores with a reward model)."""

from __future__ import annotations

from typing import Any

import torch

from rltune.errors import ConfigError
from rltune.rewards import REWARDS


@REWARDS.register("reward_model")
class RewardModel:
    """A neural reward model's score: a sequence-classification model (AutoModelForSequenceClassification,
    one label) reads prompt + completion and its logit is the reward, as trl scores with a model id given as
    a reward. Batched over the step's completions, on its own device, with its own tokenizer and chat
    template (for conversational datasets the prompt's messages plus the completion as the assistant's)."""

    def __init__(
        self,
        path: str,
        batch_size: int = 16,
        max_length: int = 2048,
        device: str | None = None,
        dtype: str = "float32",
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype))
        if self.model.config.num_labels != 1:  # which logit would be the reward is anybody's guess
            raise ConfigError(
                f"reward_model {path!r} has {self.model.config.num_labels} labels; a reward model scores with one "
                "(num_labels=1). For a classifier, write a reward function that reads the class you mean."
            )
        self.model.to(self.device).eval().requires_grad_(False)
        if self.tokenizer.pad_token is None:  # padded batches need one; the model finds the last real token
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size
        self.max_length = max_length

    def texts(self, prompts: list[Any], completions: list[Any]) -> list[str]:
        """What the reward model reads: prompt and completion joined, through its chat template when they are
        messages."""
        if completions and isinstance(completions[0], list):
            return [
                self.tokenizer.apply_chat_template(list(p) + list(c), tokenize=False)
                for p, c in zip(prompts, completions)
            ]
        return [p + c for p, c in zip(prompts, completions)]

    @torch.no_grad()
    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        texts = self.texts(prompts, completions)
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                padding_side="right",
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
                return_tensors="pt",
            ).to(self.device)
            scores += self.model(**inputs).logits[:, 0].float().tolist()
        return scores
