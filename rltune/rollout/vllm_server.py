"""A separate `vllm serve` process as the rollout engine: generation over HTTP on other GPUs or nodes,
new weights pushed after every update.

Weight sync (rollout.server.weight_sync):
- `nccl`: vLLM's own weight-transfer API. Trainer rank 0 opens an NCCL group with the server's
  workers (`/init_weight_transfer_engine`) and broadcasts every parameter each step
  (`/start_weight_update`, `/update_weights`, `/finish_weight_update`). GPU only.
- `disk`: rank 0 writes the weights as safetensors into a folder the server can read and asks the
  server to reload them in place (`/collective_rpc reload_weights`, a dev-mode route). Works
  anywhere, CPU included; it is what the CPU tests use.

Every request and every sync has a timeout: a dead or stalled server stops the run with an error.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from rltune.batch import RolloutBatch
from rltune.config import VLLMServerConfig
from rltune.errors import RLTuneError
from rltune.rollout.base import ENGINES, SamplingSettings, run_with_timeout
from rltune.rollout.vllm_engine import _export_state_dict, gathered_parameters

log = logging.getLogger(__name__)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


@ENGINES.register("vllm_server")
class VLLMServerEngine:
    def __init__(self, server: VLLMServerConfig, sync_dir: str | None = None, model: str | None = None, **_: Any):
        """`model`: which of the server's models to sample (`vllm serve --served-model-name`); default its
        first."""
        import requests

        self.cfg = server
        self.url = server.url.rstrip("/")
        self.session = requests.Session()
        if server.api_key_env:  # the key itself never enters the recipe, the logs or a checkpoint
            key = os.environ.get(server.api_key_env)
            if not key:
                raise RLTuneError(
                    f"rollout.server.api_key_env names {server.api_key_env}, which is not set in the environment"
                )
            self.session.headers["Authorization"] = f"Bearer {key}"
        self.sync_dir = Path(server.sync_dir or sync_dir or "weight-sync")
        self.transfer = None
        self.models = self._wait_until_healthy()
        if model is not None and model not in self.models:
            raise RLTuneError(f"vLLM server {self.url} serves {', '.join(self.models)}, not {model!r}")
        self.model_id = model or next(iter(self.models))
        # the served model's context (vLLM's model card has it), for the prompt filter of an eval
        self.context_length = self.models[self.model_id].get("max_model_len")

    # -- HTTP -------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any):
        import requests

        try:
            response = self.session.request(method, f"{self.url}{path}", timeout=self.cfg.timeout_s, **kwargs)
        except requests.Timeout as exc:
            raise RLTuneError(
                f"vLLM server {self.url}{path} gave no answer in {self.cfg.timeout_s:g}s (rollout.server.timeout_s)"
            ) from exc
        except requests.ConnectionError as exc:
            raise RLTuneError(f"vLLM server {self.url} is unreachable ({path}): {exc}") from exc
        if response.status_code == 404 and path in ("/collective_rpc", "/reset_prefix_cache"):
            raise RLTuneError(
                f"vLLM server {self.url} has no {path} route: weight_sync=disk needs the server started "
                "with VLLM_SERVER_DEV_MODE=1"
            )
        if response.status_code == 401:
            raise RLTuneError(
                f"vLLM server {self.url} answered 401 Unauthorized ({path}): it runs with --api-key; put its key "
                "in an environment variable and name that variable in rollout.server.api_key_env"
            )
        if response.status_code >= 400:
            raise RLTuneError(f"vLLM server {self.url}{path} answered {response.status_code}: {response.text[:500]}")
        return response

    def _wait_until_healthy(self) -> dict[str, dict[str, Any]]:
        """The served models' cards by name, once the server answers."""
        import requests

        deadline = time.monotonic() + self.cfg.connect_timeout_s
        while True:
            try:
                if self.session.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RLTuneError(
                    f"no healthy vLLM server at {self.url} after {self.cfg.connect_timeout_s:.0f}s: start it with "
                    "`vllm serve MODEL --port PORT --logprobs-mode processed_logprobs ...` and set rollout.server.url"
                )
            time.sleep(1.0)
        return {card["id"]: card for card in self._request("GET", "/v1/models").json()["data"]}

    # -- generation -------------------------------------------------------------------------------

    def _complete(
        self, ids: list[int], seed: int | None, budget: int, sampling: SamplingSettings
    ) -> list[dict[str, Any]]:
        body = {"model": self.model_id, "prompt": ids, **sampling.vllm_fields()}
        body.update(max_tokens=budget, logprobs=0, return_token_ids=True)
        if seed is not None:
            body["seed"] = seed
        choices = self._request("POST", "/v1/completions", json=body).json()["choices"]
        return sorted(choices, key=lambda c: c["index"])

    def generate(
        self, prompt_ids: list[list[int]], rows: list[dict[str, Any]], sampling: SamplingSettings
    ) -> RolloutBatch:
        requests = zip(prompt_ids, sampling.seeds(len(prompt_ids)), sampling.budgets(len(prompt_ids)))
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.cfg.max_concurrency) as pool:
            jobs = pool.map(lambda job: self._complete(*job, sampling), requests)
            answers = []
            with sampling.progress_bar(total=len(prompt_ids), unit="prompt") as bar:
                for answer in jobs:
                    answers.append(answer)
                    bar.update(1)  # tqdm's update returns whether it redrew: not to be mixed into the answers
        batch = RolloutBatch([], [], [], [], [], [], list(rows))
        for group, (ids, choices) in enumerate(zip(prompt_ids, answers)):
            for choice in choices:
                tokens = list(choice["token_ids"])
                batch.prompt_ids.append(list(ids))
                batch.completion_ids.append(tokens)
                batch.completion_texts.append(choice["text"])
                batch.sampling_logprobs.append([float(x) for x in choice["logprobs"]["token_logprobs"]][: len(tokens)])
                batch.finish_reasons.append("length" if choice["finish_reason"] == "length" else "stop")
                batch.group_ids.append(group)
        return batch

    # -- weights ----------------------------------------------------------------------------------

    def sync_weights(self, model: torch.nn.Module) -> None:
        started = time.perf_counter()
        if self.cfg.weight_sync == "disk":
            self._sync_by_disk(model)
        else:
            self._sync_by_nccl(model)
        _barrier()  # no process generates before the server has the new weights
        log.debug("weights synced to %s in %.1fs", self.url, time.perf_counter() - started)

    def _sync_by_disk(self, model: torch.nn.Module) -> None:
        with gathered_parameters(model):
            weights = _export_state_dict(model)  # a collective under FSDP: every rank takes part
            if _rank() != 0:
                return
            staging, current = self.sync_dir / "incoming", self.sync_dir / "current"
            shutil.rmtree(staging, ignore_errors=True)
            from safetensors.torch import save_file

            staging.mkdir(parents=True)
            # Tied weights share storage; safetensors wants each tensor once, contiguous.
            save_file({k: v.contiguous().clone() for k, v in weights.items()}, str(staging / "model.safetensors"))
        shutil.rmtree(current, ignore_errors=True)
        staging.rename(current)
        self._request(
            "POST",
            "/collective_rpc",
            json={"method": "reload_weights", "kwargs": {"weights_path": str(current.resolve())}},
        )
        self._request("POST", "/reset_prefix_cache")

    def _sync_by_nccl(self, model: torch.nn.Module) -> None:
        if hasattr(model, "peft_config"):
            raise RLTuneError(
                "rollout.server.weight_sync=nccl sends the model's parameters as they are; with LoRA use disk"
            )
        if self.transfer is None:
            from vllm.distributed.weight_transfer.base import ModuleSource
            from vllm.distributed.weight_transfer.clients import HTTPVLLMWeightSyncClient
            from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            info = NCCLTrainerInitInfo(
                master_address=self.cfg.nccl_host,
                master_port=self.cfg.nccl_port,
                world_size=1 + self.cfg.server_workers,
                rank=_rank(),
            )
            client = HTTPVLLMWeightSyncClient(self.url, timeout=self.cfg.timeout_s)
            self.transfer = self._bounded(
                lambda: WeightTransferTrainerFactory.trainer_init(info, client=client, source=ModuleSource(model)),
                "setting up the NCCL weight transfer",
            )
        self._bounded(self.transfer.send_weights, "sending weights over NCCL")

    def _bounded(self, work, what: str):
        """`work` under the sync timeout: a stalled collective becomes an error instead of a hang."""
        return run_with_timeout(
            work,
            self.cfg.timeout_s,
            f"{what} to {self.url} stalled for {self.cfg.timeout_s:g}s (rollout.server.timeout_s)",
        )

    def close(self) -> None:
        if self.transfer is not None:
            self.transfer.shutdown()
        self.session.close()
