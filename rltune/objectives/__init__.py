"""Policy objectives: per-token policy-gradient losses.

An objective is a class registered in `OBJECTIVES`, built as `cls(algorithm_config, **kwargs)` and
called as `objective(micro_batch, policy_output) -> (per_token_loss [B, T], metrics)`. It sees the
whole `RolloutBatch` through `micro_batch.rollout`, so objectives that need per-group statistics
(e.g. a per-question accuracy) compute or read them there. An objective whose loss and gradient are
exactly zero for a sample with zero advantages says so with `zero_advantage_is_zero_loss = True`, and
the trainer then leaves such samples out of the update (train.skip_zero_advantage).
"""

from rltune.registry import Registry

OBJECTIVES: Registry = Registry(
    "objective",
    builtin_modules=(
        "rltune.objectives.clipped",
        "rltune.objectives.nft",
        "rltune.objectives.gspo",
        "rltune.objectives.cispo",
    ),
)

__all__ = ["OBJECTIVES"]
