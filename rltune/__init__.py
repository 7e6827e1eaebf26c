"""rltune: RL post-training of language models (GRPO-style trainer, vLLM rollouts, pass@k eval)."""

__version__ = "0.1.0"
