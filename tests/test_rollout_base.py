"""The engines' shared checks (rltune.rollout.base) without an engine: the context guard at its limit."""

import pytest

from rltune.errors import RLTuneError
from rltune.rollout.base import SamplingSettings, check_context


def test_a_prompt_and_its_budget_fit_the_context_up_to_its_last_position():
    prompts = [[1] * 10, [1] * 20]
    check_context(prompts, SamplingSettings(n=1, max_tokens=12), context=32, engine="hf")  # 20 + 12 = 32: fits
    check_context(prompts, SamplingSettings(n=1, max_tokens=12), context=None, engine="hf")  # no known limit
    with pytest.raises(RLTuneError, match="cannot take a prompt of 20 tokens with max_tokens 12: the model holds 31"):
        check_context(prompts, SamplingSettings(n=1, max_tokens=12), context=31, engine="hf")
    with pytest.raises(RLTuneError, match="holds 20 positions"):  # far over, too
        check_context(prompts, SamplingSettings(n=1, max_tokens=12), context=20, engine="vllm")
    # per-prompt budgets (later turns): the pair that needs the most room counts, not the longest prompt
    per_prompt = SamplingSettings(n=1, max_tokens=30, prompt_max_tokens=[22, 5])
    check_context(prompts, per_prompt, context=32, engine="hf")  # 10 + 22 and 20 + 5 fit
    with pytest.raises(RLTuneError, match="a prompt of 10 tokens with max_tokens 22"):
        check_context(prompts, per_prompt, context=31, engine="hf")
