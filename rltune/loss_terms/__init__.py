"""Loss terms added to the objective (KL to a reference, entropy bonus, ...).

A term is a class registered in `LOSS_TERMS`, built as `cls(**kwargs)` and called as
`term(micro_batch, policy_output) -> (per_token_loss [B, T], metrics)`; the trainer multiplies by the
recipe's `coef` and aggregates the sum with the objective under one normaliser. Class attributes
tell the trainer what to prepare: `needs_reference = True` (reference logprobs in
`micro_batch.ref_logprobs`), `needs_entropy_grad = True` (entropy with gradients),
`updates_reference = True` (the term changes the reference weights, which checkpoints then keep).
Optional methods: `on_step_end(trainer, metrics)` after every RL step, and `state_dict()` /
`load_state_dict(state)` for state that checkpoints must keep.
"""

from rltune.registry import Registry

LOSS_TERMS: Registry = Registry(
    "loss term", builtin_modules=("rltune.loss_terms.kl", "rltune.loss_terms.entropy", "rltune.loss_terms.tea")
)

__all__ = ["LOSS_TERMS"]
