"""The colocated vLLM engine: sampling logprobs, finish reasons, and in-place weight sync."""

import pytest
import torch
from test_multi_turn import check_trajectories
from transformers import AutoModelForCausalLM

from rltune.errors import RLTuneError
from rltune.models import load_tokenizer
from rltune.rollout import SamplingSettings, build_engine

pytestmark = pytest.mark.slow


def hf_logprobs(model, prompt, completion, temperature):
    seq = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(seq).logits[0, len(prompt) - 1 : -1].float() / temperature
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def check_engine_follows_the_policy(engine, model, tokenizer, sampling) -> None:
    """The engine's sampling logprobs equal the policy's, before and after the policy changes and is
    synced into the engine; finish reasons agree with the end-of-sequence token."""
    prompts = [tokenizer("3+4=")["input_ids"], tokenizer("9+9=")["input_ids"]]
    batch = engine.generate(prompts, [{}, {}], sampling)
    assert batch.group_ids == [0, 0, 0, 0, 1, 1, 1, 1]
    for i in range(len(batch)):
        ids = batch.completion_ids[i]
        assert (batch.finish_reasons[i] == "stop") == (ids[-1] == tokenizer.eos_token_id)
        expected = hf_logprobs(model, batch.prompt_ids[i], ids, sampling.temperature)
        assert torch.allclose(expected, torch.tensor(batch.sampling_logprobs[i]), atol=1e-3)

    # Change the policy; after the sync the engine must sample from the new weights.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine.sync_weights(model)
    batch = engine.generate(prompts, [{}, {}], sampling)
    for i in range(len(batch)):
        expected = hf_logprobs(model, batch.prompt_ids[i], batch.completion_ids[i], sampling.temperature)
        assert torch.allclose(expected, torch.tensor(batch.sampling_logprobs[i]), atol=1e-3)


def check_sampling_settings(engine, tokenizer) -> None:
    """Stop strings end a completion at the token completing the first one (kept, in the tokens and the
    text) and change nothing before it; top_k=1 samples the greedy completion."""
    prompts = [tokenizer("3+4=")["input_ids"], tokenizer("12+9=")["input_ids"]]
    free = SamplingSettings(n=3, temperature=1.0, max_tokens=12, prompt_seeds=[5, 6])
    whole = engine.generate(prompts, [{}, {}], free)
    # a stop string the samples contain past their start: the second token's text, where it is printable
    stop = next(
        text
        for ids in whole.completion_ids
        for text in [tokenizer.decode(ids[1:2]).strip()]
        if len(ids) > 3 and text and text.isascii()
    )
    stopped = engine.generate(prompts, [{}, {}], SamplingSettings(**{**free.__dict__, "stop": [stop]}))
    cuts = 0
    for ids, cut, text, reason in zip(
        whole.completion_ids, stopped.completion_ids, stopped.completion_texts, stopped.finish_reasons
    ):
        texts = [tokenizer.decode(ids[:n], skip_special_tokens=True) for n in range(1, len(ids) + 1)]
        end = next((n + 1 for n, prefix in enumerate(texts) if stop in prefix), None)
        assert cut == ids[: end or len(ids)], (stop, ids, cut)
        if end is not None:
            cuts += 1
            assert reason == "stop" and stop in text, (stop, text)
    assert cuts >= 1
    greedy = engine.generate(prompts, [{}, {}], SamplingSettings(n=1, temperature=0.0, max_tokens=12))
    top1 = engine.generate(prompts, [{}, {}], SamplingSettings(**{**free.__dict__, "top_k": 1}))
    assert top1.completion_ids == [ids for ids in greedy.completion_ids for _ in range(3)]


def test_vllm_logprobs_match_the_policy_before_and_after_a_weight_sync(demo_assets):
    pytest.importorskip("vllm")
    model_dir, _ = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    engine = build_engine("vllm", model_path=str(model_dir), dtype="float32", max_model_len=64)
    try:
        # on the demo model, before check_engine_follows_the_policy changes it at random
        check_trajectories(engine, model, tokenizer)  # multi-turn episodes
        check_sampling_settings(engine, tokenizer)
        check_engine_follows_the_policy(
            engine, model, tokenizer, SamplingSettings(n=4, temperature=0.8, max_tokens=12, seed=0)
        )
        with pytest.raises(RLTuneError, match="generation_kwargs.*no_such_field"):
            engine.generate([[5, 6]], [{}], SamplingSettings(n=1, max_tokens=4, generation_kwargs={"no_such_field": 1}))
        # a prompt with no room for max_tokens: one line, not vLLM's validation traceback
        with pytest.raises(
            RLTuneError, match="cannot take a prompt of 60 tokens with max_tokens 12: the model holds 64"
        ):
            engine.generate([[5] * 60], [{}], SamplingSettings(n=1, max_tokens=12))
    finally:
        engine.close()


class SleepRecorder:
    """vLLM's LLM with `sleep` and `wake_up` recorded instead of run (vLLM has no sleep mode on the CPU);
    every other call goes to the real engine, generate and weight reloads recorded on the way."""

    def __init__(self, llm):
        self.llm = llm
        self.calls: list[tuple] = []

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tags))

    def generate(self, *args, **kwargs):
        self.calls.append(("generate",))
        return self.llm.generate(*args, **kwargs)

    def collective_rpc(self, method, **kwargs):
        self.calls.append((method,))
        return self.llm.collective_rpc(method, **kwargs)

    def __getattr__(self, name):
        return getattr(self.llm, name)


def test_sleeping_engine_sleeps_through_the_update_and_wakes_with_the_new_weights(tmp_path, demo_assets):
    pytest.importorskip("vllm")
    from vllm.platforms import current_platform

    from conftest import demo_recipe
    from rltune.errors import RLTuneError
    from rltune.rollout import engine_from_recipe
    from rltune.trainer import Trainer

    sections = {
        "rollout": {"engine": "vllm", "group_size": 4, "max_tokens": 8, "vllm": {"max_model_len": 64}},
        "train": {"steps": 1, "prompts_per_step": 4, "micro_batch_size": 16},
    }
    cfg = demo_recipe(tmp_path, *demo_assets, sections)
    if not current_platform.is_sleep_mode_available():
        cfg.rollout.vllm.sleep = True
        with pytest.raises(RLTuneError, match="rollout.vllm.sleep needs vLLM's sleep mode"):
            engine_from_recipe(cfg.rollout, cfg.model, seed=0, max_model_len=64)
        cfg.rollout.vllm.sleep = False
    # Built without sleep mode, which this platform may lack, then given it with sleep/wake_up recorded.
    trainer = Trainer(cfg)
    try:
        engine = trainer.engine
        # rollout.vllm.enforce_eager left unset: eager on a CPU, CUDA graphs on a GPU
        assert engine.llm.llm_engine.vllm_config.model_config.enforce_eager == (not torch.cuda.is_available())
        cfg.rollout.vllm.sleep = engine.can_sleep = True
        recorder = engine.llm = SleepRecorder(engine.llm)
        trainer.train_step()
        sleep_at = recorder.calls.index(("sleep", 2))
        assert recorder.calls[:sleep_at] == [("generate",)] * sleep_at and sleep_at >= 1
        assert recorder.calls[sleep_at:] == [
            ("sleep", 2),
            ("wake_up", ["weights"]),
            ("reload_weights",),
            ("wake_up", ["kv_cache"]),
        ]
        assert not engine.asleep

        sampling = SamplingSettings(n=2, temperature=1.0, max_tokens=6, seed=3)
        prompts = [trainer.tokenizer("3+4=")["input_ids"]]
        engine.sleep()
        with pytest.raises(RLTuneError, match="asleep"):
            engine.generate(prompts, [{}], sampling)
        with torch.no_grad():
            for p in trainer.policy.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        engine.sync_weights(trainer.policy)
        batch = engine.generate(prompts, [{}], sampling)
        for i in range(len(batch)):
            expected = hf_logprobs(trainer.policy, batch.prompt_ids[i], batch.completion_ids[i], 1.0)
            assert torch.allclose(expected, torch.tensor(batch.sampling_logprobs[i]), atol=1e-3)
    finally:
        trainer.close()
