"""User-style rollout engine plug-ins used by the tests."""

import copy
import time

import torch

from rltune.rollout.hf_engine import HFEngine


class StaleEngine(HFEngine):
    """Samples from its own copy of the starting policy; its sync_weights does nothing (a broken sync)."""

    def __init__(self, model, tokenizer, **_):
        super().__init__(model=copy.deepcopy(model), tokenizer=tokenizer)

    def sync_weights(self, model):
        pass


class PerturbedEngine(HFEngine):
    """Samples from a copy of the policy with noise of `RLTUNE_TEST_NOISE` (default 0.02) added to every
    weight after each sync: a sampler that disagrees with the trainer by a known amount."""

    def __init__(self, model, tokenizer, **_):
        super().__init__(model=copy.deepcopy(model), tokenizer=tokenizer)
        self.sync_weights(model)

    def sync_weights(self, model):
        import os

        noise = float(os.environ.get("RLTUNE_TEST_NOISE", "0.02"))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for mine, theirs in zip(self.model.parameters(), model.parameters()):
                mine.copy_(theirs + noise * torch.randn(theirs.shape, generator=generator))


class SlowEngine(HFEngine):
    """The hf engine, each generate call 0.3 s late: asynchronous rollouts then fall behind the update."""

    def generate(self, prompt_ids, rows, sampling):
        time.sleep(0.3)
        return super().generate(prompt_ids, rows, sampling)
