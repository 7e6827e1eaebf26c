"""Loading the policy, its tokenizer and the frozen reference model."""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path

import torch

from rltune.config import ModelConfig
from rltune.errors import ConfigError, RLTuneError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

SHARED_KV_SDPA = "rltune_sdpa"
"""The attention implementation rltune's models run where transformers would run "sdpa"."""


def sdpa_sharing_kv_heads(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' "sdpa" attention, except on the CPU with a mask: there transformers copies every key and
    value head once per query head sharing it (grouped-query attention; its CUDA kernels need that), while
    torch's CPU kernel takes the shared heads and the mask as they are. For the SmolLM2 shape (3 query heads
    a head) that copy was 6% of a decoding step on the CPU (benchmarks/RESULTS.md)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = key.shape[1] != query.shape[1]
    if query.device.type != "cpu" or attention_mask is None or not grouped or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SHARED_KV_SDPA, sdpa_sharing_kv_heads)
    AttentionMaskInterface.register(SHARED_KV_SDPA, sdpa_mask)


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise RLTuneError(f"cannot load a tokenizer from {path!r} (model.path): {exc}") from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(path: str, trust_remote_code: bool = False) -> int | None:
    """Positions the model at `path` takes, prompt and completion together (its config's
    max_position_embeddings; None when the config names none)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).get_text_config()
    return getattr(config, "max_position_embeddings", None)


def load_causal_lm(path: str, cfg: ModelConfig) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[cfg.dtype], trust_remote_code=cfg.trust_remote_code
        )
    except Exception as exc:
        raise RLTuneError(f"cannot load a causal LM from {path!r}: {exc}") from exc
    use_shared_kv_sdpa(model)
    return model


def use_shared_kv_sdpa(model: torch.nn.Module) -> None:
    """Switch a model that runs transformers' "sdpa" attention to `sdpa_sharing_kv_heads` (same results)."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        _register_attention()
        model.set_attn_implementation(SHARED_KV_SDPA)


def load_policy(cfg: ModelConfig, checkpoint: str | None = None) -> torch.nn.Module:
    """The trainable policy; from a checkpoint folder when resuming."""
    adapter_dir = Path(checkpoint) / "adapter" if checkpoint else None
    weights = checkpoint if checkpoint and not cfg.lora else cfg.path
    model = load_causal_lm(weights, cfg)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if cfg.lora:
        try:
            from peft import LoraConfig as PeftLora
            from peft import PeftModel, get_peft_model
        except ImportError as exc:
            raise RLTuneError("model.lora needs peft: pip install 'rltune[peft]'") from exc
        if adapter_dir is not None:
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
        else:
            lora = cfg.lora
            model = get_peft_model(
                model,
                PeftLora(
                    r=lora.r,
                    lora_alpha=lora.alpha,
                    lora_dropout=lora.dropout,
                    target_modules=lora.target_modules,
                    task_type="CAUSAL_LM",
                ),
            )
    model.train()
    return model


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes `logits_to_keep` (runs its LM head on the last positions only)."""
    return "logits_to_keep" in inspect.signature(base_model(model).forward).parameters


PACKING_ATTENTION = {"eager", "sdpa", SHARED_KV_SDPA, "flash_attention_2", "flash_attention_3", "flex_attention"}


def reads_packed_rows(model: torch.nn.Module) -> bool:
    """Whether the model keeps sequences packed one after another into a row apart, given position ids
    that restart at 0 for each sequence, no attention mask and no KV cache (use_cache=False): transformers
    decoders whose modeling file builds masks with `create_causal_mask` do (a block-diagonal causal mask,
    or varlen flash attention), under the attention implementations that read those masks."""
    base = base_model(model)
    if not hasattr(base, "get_decoder"):
        return False
    modeling = sys.modules.get(type(base.get_decoder()).__module__)
    attention = getattr(base.config, "_attn_implementation", None)
    return hasattr(modeling, "create_causal_mask") and attention in PACKING_ATTENTION


def compile_decoder_layers(model: torch.nn.Module) -> None:
    """torch.compile every decoder layer in place. The layers run the same code on their own weights, so
    they share one compiled graph: compiling takes seconds, where the whole model would take minutes."""
    base = base_model(model)
    layers = getattr(base.get_decoder(), "layers", None) if hasattr(base, "get_decoder") else None
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"train.compile: {type(base).__name__} has no decoder.layers to compile; set train.compile=false"
        )
    for layer in layers:
        layer.compile()


def load_reference(cfg: ModelConfig) -> torch.nn.Module:
    model = load_causal_lm(cfg.path, cfg)
    model.eval()
    model.requires_grad_(False)
    return model
