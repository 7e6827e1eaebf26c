"""Loading models: the attention rltune switches them to computes what transformers' own sdpa computes."""

import torch
from transformers import AutoModelForCausalLM

from rltune.batch import pack_rows
from rltune.config import ModelConfig
from rltune.demo import build_tiny_model
from rltune.models import SHARED_KV_SDPA, load_causal_lm, reads_packed_rows


def test_shared_kv_attention_gives_transformers_logits_and_gradients(tmp_path):
    build_tiny_model(40, seed=3, num_attention_heads=4, num_key_value_heads=2).save_pretrained(tmp_path)
    ours = load_causal_lm(str(tmp_path), ModelConfig(path=str(tmp_path)))
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert ours.config._attn_implementation == SHARED_KV_SDPA and plain.config._attn_implementation == "sdpa"
    ids = torch.randint(2, 40, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding: the mask goes to the attention, the path this attention changes
    mask[1, :1] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    results = []
    for model in (ours, plain):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        # one cached decoding step: a single query against the cache, under the mask
        step = model(
            input_ids=ids[:, :1],
            attention_mask=torch.cat([mask, mask[:, :1]], dim=1),
            position_ids=positions[:, -1:] + 1,
            past_key_values=out.past_key_values,
        )
        loss = (out.logits[mask.bool()] ** 2).mean() + step.logits.square().mean()
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        results.append((out.logits.detach(), step.logits.detach(), grads))
    (logits, step, grads), (plain_logits, plain_step, plain_grads) = results
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step, plain_step, rtol=1e-5, atol=1e-5)
    for g, plain_g in zip(grads, plain_grads, strict=True):
        torch.testing.assert_close(g, plain_g, rtol=1e-4, atol=1e-6)


def test_saved_models_keep_transformers_attention(tmp_path):
    build_tiny_model(40, num_attention_heads=4, num_key_value_heads=2).save_pretrained(tmp_path / "a")
    load_causal_lm(str(tmp_path / "a"), ModelConfig(path=str(tmp_path / "a"))).save_pretrained(tmp_path / "b")
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "b").config._attn_implementation == "sdpa"


def test_packed_rows_keep_their_sequences_apart(tmp_path):
    """Sequences packed one after another into rows (position ids restarting at each, no attention mask)
    get the logits and gradients each gets alone: transformers builds a block-diagonal causal mask, which
    the shared-KV attention takes like any other mask."""
    build_tiny_model(40, seed=3, num_attention_heads=4, num_key_value_heads=2).save_pretrained(tmp_path)
    model = load_causal_lm(str(tmp_path), ModelConfig(path=str(tmp_path)))
    assert reads_packed_rows(model) and not reads_packed_rows(torch.nn.Linear(2, 2))
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(3, 40, (n,), generator=generator).tolist() for n in (7, 4, 2, 5)]
    rows, positions, starts = pack_rows(sequences, pad_id=0)
    assert len(rows) == 3 and all(len(r) == 7 for r in rows)  # 7 | 5 + 2 | 4 + 3 pads
    assert sorted(t for r in rows for t in r if t) == sorted(t for s in sequences for t in s)
    # use_cache=False: with a KV cache transformers takes the rows for single sequences
    packed = model(input_ids=torch.tensor(rows), position_ids=torch.tensor(positions), use_cache=False).logits
    picked = torch.cat([packed[r, c : c + len(s)] for s, (r, c) in zip(sequences, starts)])
    (picked.square().mean()).backward()
    packed_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alone = torch.cat([model(input_ids=torch.tensor([s])).logits[0] for s in sequences])
    (alone.square().mean()).backward()
    torch.testing.assert_close(picked, alone, rtol=1e-5, atol=1e-5)
    for g, alone_g in zip(packed_grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(g, alone_g, rtol=1e-4, atol=1e-6)


def test_the_reference_model_is_frozen_in_eval_mode_and_the_policy_trains(tiny_model_dir):
    from rltune.models import load_policy, load_reference

    cfg = ModelConfig(path=str(tiny_model_dir))
    reference = load_reference(cfg)
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    assert not any(m.training for m in reference.modules())
    policy = load_policy(cfg)
    assert policy.training and all(p.requires_grad for p in policy.parameters())


def test_lora_without_peft_says_how_to_install_it(tiny_model_dir, monkeypatch):
    import sys

    import pytest

    from rltune.config import LoraConfig
    from rltune.errors import RLTuneError
    from rltune.models import load_policy

    monkeypatch.setitem(sys.modules, "peft", None)  # as if it were not installed
    with pytest.raises(RLTuneError, match=r"model.lora needs peft: pip install 'rltune\[peft\]'"):
        load_policy(ModelConfig(path=str(tiny_model_dir), lora=LoraConfig()))


def test_compiling_wraps_every_decoder_layer(tiny_model_dir):
    from rltune.models import compile_decoder_layers

    model = load_causal_lm(str(tiny_model_dir), ModelConfig(path=str(tiny_model_dir)))
    compile_decoder_layers(model)
    layers = model.model.layers
    assert len(layers) == 2 and all(layer._compiled_call_impl is not None for layer in layers)
