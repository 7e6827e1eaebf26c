"""rltune: RL post-training of language models (GRPO-style trainer, vLLM rollouts, pass@k eval).

The public Python API (imported lazily, so `import rltune` stays light):

    from rltune import Trainer, load_recipe, RecipeConfig, RewardSpec

    cfg = load_recipe("recipes/demo_cpu.yaml", ["train.steps=10"])
    cfg.rewards.append(RewardSpec(function=my_reward, weight=0.5))
    with Trainer(cfg, callbacks=[my_callback], dataset=my_dataset) as trainer:
        trainer.train()

See the README's "Python API" section for a complete example.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Trainer": "rltune.trainer",
    "Callback": "rltune.trainer",
    "load_recipe": "rltune.config",
    "recipe_yaml": "rltune.config",
    "RecipeConfig": "rltune.config",
    "ModelConfig": "rltune.config",
    "LoraConfig": "rltune.config",
    "DataConfig": "rltune.config",
    "RolloutConfig": "rltune.config",
    "RewardSpec": "rltune.config",
    "RewardsConfig": "rltune.config",
    "AlgorithmConfig": "rltune.config",
    "LossTermSpec": "rltune.config",
    "TrainConfig": "rltune.config",
    "EvalHookConfig": "rltune.config",
    "Completion": "rltune.rewards",
    "REWARDS": "rltune.rewards",
    "ADVANTAGES": "rltune.advantages",
    "OBJECTIVES": "rltune.objectives",
    "LOSS_TERMS": "rltune.loss_terms",
    "ENGINES": "rltune.rollout.base",
    "ENVIRONMENTS": "rltune.environments",
    "EvalSettings": "rltune.eval.runner",
    "evaluate": "rltune.eval.runner",
    "grade": "rltune.eval.grading",
    "RLTuneError": "rltune.errors",
    "ConfigError": "rltune.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rltune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
