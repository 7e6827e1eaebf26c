import torch
from transformers import AutoModelForCausalLM

from rltune.models import load_tokenizer
from rltune.rollout import SamplingSettings, build_engine


def test_hf_engine_groups_logprobs_and_finish_reasons(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    engine = build_engine("hf", model=model, tokenizer=tokenizer)
    prompts = [tokenizer("1+2=")["input_ids"], tokenizer("12+30=")["input_ids"]]
    batch = engine.generate(
        prompts, [{"gold": "3"}, {"gold": "42"}], SamplingSettings(n=3, temperature=0.7, max_tokens=6, seed=0)
    )
    assert batch.group_ids == [0, 0, 0, 1, 1, 1] and batch.groups() == [[0, 1, 2], [3, 4, 5]]
    assert all(len(c) == len(lp) for c, lp in zip(batch.completion_ids, batch.sampling_logprobs))
    for ids, reason in zip(batch.completion_ids, batch.finish_reasons):
        assert (reason == "stop") == (ids[-1] == tokenizer.eos_token_id)
        assert reason == "stop" or len(ids) == 6
    # The sampling logprobs are the model's own (temperature-scaled) logprobs of those tokens.
    i = 4
    seq = torch.tensor([prompts[1] + batch.completion_ids[i]])
    with torch.no_grad():
        logits = model(seq).logits[0, len(prompts[1]) - 1 : -1] / 0.7
    expected = logits.log_softmax(-1).gather(-1, torch.tensor(batch.completion_ids[i])[:, None]).squeeze(-1)
    assert torch.allclose(expected, torch.tensor(batch.sampling_logprobs[i]), atol=1e-4)
