"""The vllm_server engine against a real `vllm serve` subprocess on the CPU: HTTP generation with
sampling logprobs, weight sync by disk reload, GRPO steps through the trainer, and clear errors for an
unreachable or slow server; in the fast tier, the engine's side of the protocol against a stand-in
server (a server still starting, the request body, the disk sync replacing its folder, LoRA merged for the
sync and unmerged for training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from test_multi_turn import check_trajectories
from test_vllm_engine import check_engine_follows_the_policy, check_sampling_settings, hf_logprobs
from transformers import AutoModelForCausalLM

from conftest import demo_recipe, free_port, two_machines, write_recipe
from rltune.config import VLLMServerConfig
from rltune.errors import RLTuneError
from rltune.models import load_tokenizer
from rltune.rollout import SamplingSettings, build_engine

KEY_ENV, API_KEY = "RLTUNE_TEST_VLLM_KEY", "test-key-7f3a"


def healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_unreachable_server_fails_fast_with_advice():
    started = time.monotonic()
    cfg = VLLMServerConfig(url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=2)
    with pytest.raises(RLTuneError, match="no healthy vLLM server.*vllm serve"):
        build_engine("vllm_server", server=cfg)
    assert time.monotonic() - started < 15


class StandInServer:
    """A local HTTP server that answers the routes of `vllm serve` the engine uses, records what it was asked,
    and reports healthy only `unhealthy_s` after it starts: the engine's side of the protocol without the
    engine (the real server: the slow tests below)."""

    def __init__(self, unhealthy_s: float):
        import http.server
        import threading

        self.requests: list[tuple[str, dict]] = []
        healthy_at = time.monotonic() + unhealthy_s
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/health":
                    self.answer(200 if time.monotonic() >= healthy_at else 503, {})
                else:
                    self.answer(200, {"data": [{"id": "served", "max_model_len": 128}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                outer.requests.append((self.path, body))
                if self.path != "/v1/completions":
                    self.answer(200, {})
                    return
                # as vLLM answers: token ids only when asked for them
                choices = []
                for i in range(body["n"]):
                    choice = {"index": i, "text": "ab", "finish_reason": "length" if i else "stop"}
                    choice["logprobs"] = {"token_logprobs": [-0.5, -1.0]}
                    if body.get("return_token_ids"):
                        choice["token_ids"] = [7, 8]
                    choices.append(choice)
                self.answer(200, {"choices": choices[::-1]})

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


def test_the_engine_waits_for_a_starting_server_samples_with_token_ids_and_replaces_the_synced_weights(tmp_path):
    from safetensors.torch import load_file

    from rltune.demo import build_tiny_model

    stand_in = StandInServer(unhealthy_s=1.5)  # still starting when the engine first asks
    try:
        cfg = VLLMServerConfig(url=stand_in.url, connect_timeout_s=30, weight_sync="disk", sync_dir=str(tmp_path))
        engine = build_engine("vllm_server", server=cfg)
        assert engine.model_id == "served" and engine.context_length == 128
        batch = engine.generate([[1, 2, 3]], [{"q": 1}], SamplingSettings(n=2, max_tokens=5, seed=3))
        path, body = stand_in.requests[-1]
        assert path == "/v1/completions" and body["return_token_ids"] is True and body["seed"] == 3
        assert body["prompt"] == [1, 2, 3] and body["max_tokens"] == 5 and body["logprobs"] == 0
        assert batch.completion_ids == [[7, 8], [7, 8]] and batch.finish_reasons == ["stop", "length"]
        model = build_tiny_model(16, seed=0)
        for value in (1.0, 2.0):  # the second sync replaces the first one's folder
            with torch.no_grad():
                model.lm_head.weight.fill_(value)
            engine.sync_weights(model)
            synced = load_file(tmp_path / "current" / "model.safetensors")
            assert torch.all(synced["lm_head.weight"] == value) and not (tmp_path / "incoming").exists()
            assert [p for p, _ in stand_in.requests[-2:]] == ["/collective_rpc", "/reset_prefix_cache"]
            assert stand_in.requests[-2][1]["kwargs"]["weights_path"] == str((tmp_path / "current").resolve())
        engine.close()
    finally:
        stand_in.close()


def test_a_lora_policy_syncs_merged_by_disk_stays_unmerged_for_training_and_nccl_is_refused(tmp_path):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from rltune.demo import build_tiny_model

    # adapters that are not zero at the start, so that merging them changes the weights
    lora = get_peft_model(
        build_tiny_model(16, seed=0), LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    )
    q_proj = lora.get_base_model().model.layers[0].self_attn.q_proj
    base = q_proj.base_layer.weight.detach().clone()
    merged = base + q_proj.get_delta_weight("default")
    stand_in = StandInServer(unhealthy_s=0.0)
    try:
        disk = VLLMServerConfig(url=stand_in.url, weight_sync="disk", sync_dir=str(tmp_path))
        engine = build_engine("vllm_server", server=disk)
        engine.sync_weights(lora)
        synced = load_file(tmp_path / "current" / "model.safetensors")
        assert torch.allclose(synced["model.layers.0.self_attn.q_proj.weight"], merged)
        assert not any("lora_" in name for name in synced)
        # training goes on from the adapters over the unchanged base
        assert torch.allclose(q_proj.base_layer.weight, base, atol=1e-6) and not q_proj.merged
        engine.close()
        engine = build_engine("vllm_server", server=VLLMServerConfig(url=stand_in.url, weight_sync="nccl"))
        with pytest.raises(RLTuneError, match="with LoRA use disk"):
            engine.sync_weights(lora)
        engine.close()
    finally:
        stand_in.close()


@pytest.fixture(scope="module")
def server(demo_assets, tmp_path_factory):
    """`vllm serve` of the demo model, as a user would start it (dev mode for the disk weight sync), with an
    API key that the engine reads from $RLTUNE_TEST_VLLM_KEY (rollout.server.api_key_env)."""
    pytest.importorskip("vllm")
    model_dir, data_file = demo_assets
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    cmd += ["--port", str(port), "--max-model-len", "128", "--dtype", "float32", "--enforce-eager"]
    cmd += ["--logprobs-mode", "processed_logprobs", "--gpu-memory-utilization", "0.3", "--no-enable-chunked-prefill"]
    cmd += ["--api-key", API_KEY]
    os.environ[KEY_ENV] = API_KEY
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while not healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield url, model_dir, data_file
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_server_generation_and_disk_weight_sync_match_the_policy(server, tmp_path):
    url, model_dir, _ = server
    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with pytest.raises(RLTuneError, match="401 Unauthorized .*rollout.server.api_key_env"):
        build_engine("vllm_server", server=VLLMServerConfig(url=url))
    cfg = VLLMServerConfig(url=url, weight_sync="disk", sync_dir=str(tmp_path / "sync"), api_key_env=KEY_ENV)
    engine = build_engine("vllm_server", server=cfg)
    prompts = [tokenizer("3+4=")["input_ids"], tokenizer("9+9=")["input_ids"]]
    sampling = SamplingSettings(n=4, temperature=0.8, max_tokens=12, prompt_seeds=[11, 12])
    try:
        first = engine.generate(prompts, [{}, {}], sampling)
        assert engine.generate(prompts, [{}, {}], sampling).completion_ids == first.completion_ids  # seeded
        # on the demo model, before check_engine_follows_the_policy changes it at random
        check_trajectories(engine, model, tokenizer)  # multi-turn episodes
        check_sampling_settings(engine, tokenizer)
        check_engine_follows_the_policy(engine, model, tokenizer, sampling)
        slow_cfg = VLLMServerConfig(url=url, api_key_env=KEY_ENV)
        slow = build_engine("vllm_server", server=slow_cfg)
        slow_cfg.timeout_s = 1e-4  # after start-up: no completion comes back that fast
        with pytest.raises(RLTuneError, match="no answer in"):
            slow.generate(prompts, [{}, {}], sampling)
    finally:
        engine.sync_weights(AutoModelForCausalLM.from_pretrained(model_dir))  # leave the server as found
        engine.close()


@pytest.mark.slow
def test_grpo_steps_through_the_server(server, tmp_path):
    from rltune.trainer import Trainer

    url, model_dir, data_file = server
    cfg = demo_recipe(
        tmp_path,
        model_dir,
        data_file,
        {
            "rollout": {"engine": "vllm_server", "server": {"url": url, "weight_sync": "disk", "api_key_env": KEY_ENV}},
            "train": {"steps": 3},
        },
    )
    trainer = Trainer(cfg)
    try:
        last = trainer.train()
        assert last["completion/length_mean"] > 0
        saved = (tmp_path / "run" / "checkpoint-3" / "recipe.yaml").read_text()
        assert KEY_ENV in saved and API_KEY not in saved  # the variable's name is kept, never the key
        # the server now samples from the trained policy
        tokenizer = trainer.tokenizer
        prompt = [tokenizer("3+4=")["input_ids"]]
        batch = trainer.engine.generate(prompt, [{}], SamplingSettings(n=2, temperature=1.0, max_tokens=12, seed=0))
        for i in range(len(batch)):
            expected = hf_logprobs(trainer.policy, batch.prompt_ids[i], batch.completion_ids[i], 1.0)
            assert torch.allclose(expected, torch.tensor(batch.sampling_logprobs[i]), atol=1e-3)
        assert (tmp_path / "run" / "weight-sync" / "current" / "model.safetensors").is_file()
        assert last["mismatch/log_ratio_abs_mean"] < 1e-4  # the sync check held at every step

        # A sync that never reaches the server: the step after it stops the run.
        trainer.engine.sync_weights = lambda model: None
        for group in trainer.optimizer.param_groups:
            group["lr"] = 1e-2  # a step large enough to move the policy past the tolerance at once
        trainer.train_step()
        trainer.step += 1
        with pytest.raises(RLTuneError, match="samples from stale weights: at step 5 the 'vllm_server' engine"):
            trainer.train_step()
    finally:
        trainer.engine.__dict__.pop("sync_weights", None)
        trainer.engine.sync_weights(AutoModelForCausalLM.from_pretrained(model_dir))
        trainer.close()


@pytest.mark.slow
def test_two_machines_train_through_one_server(server, tmp_path):
    """Two `accelerate launch` commands as two machines (one FSDP2 process each) and a `vllm serve` as the
    inference node: rank 0 writes the gathered weights after every update and the server reloads them;
    the sync check (on) holds at every step, so each step sampled from the weights it trained."""
    url, model_dir, data_file = server
    out = tmp_path / "run"
    server_cfg = {"url": url, "weight_sync": "disk", "api_key_env": KEY_ENV}
    recipe = write_recipe(
        tmp_path,
        {
            "model": {"path": str(model_dir)},
            "data": {"path": str(data_file)},
            "rollout": {"engine": "vllm_server", "server": server_cfg},
            "train": {"steps": 2, "prompts_per_step": 4, "output_dir": str(out), "progress_bar": False},
        },
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    machines = two_machines("fsdp2_cpu_2proc", env, ["-m", "rltune", "train", str(recipe)], tmp_path)
    try:
        for machine in machines:
            _, stderr = machine.communicate(timeout=900)
            assert machine.returncode == 0, stderr[-4000:]
    finally:
        from transformers import AutoModelForCausalLM

        cfg = VLLMServerConfig(url=url, weight_sync="disk", sync_dir=str(tmp_path / "reset"), api_key_env=KEY_ENV)
        build_engine("vllm_server", server=cfg).sync_weights(AutoModelForCausalLM.from_pretrained(model_dir))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["mismatch/log_ratio_abs_mean"] < 1e-4 for m in metrics)
    assert metrics[-1]["memory/params_held"] == pytest.approx(0.5, abs=0.01)
    assert (out / "weight-sync" / "current" / "model.safetensors").is_file()


@pytest.mark.slow
def test_an_llm_judge_asks_a_served_model_and_reads_its_verdicts(server, tmp_path):
    """The built-in llm_judge against a real `vllm serve`: its template makes the judge continue a sum, the
    verdict is the first digit of the reply, and the scores equal the greedy continuations of the same
    weights in transformers. Replies are cached; an unreachable judge stops the step after its retries."""
    import re

    from rltune.batch import RolloutBatch
    from rltune.config import RewardSpec
    from rltune.reward_pipeline import RewardPipeline
    from rltune.rewards.llm_judge import LLMJudge

    url, model_dir, _ = server
    cfg = VLLMServerConfig(url=url, weight_sync="disk", sync_dir=str(tmp_path / "reset"), api_key_env=KEY_ENV)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    build_engine("vllm_server", server=cfg).sync_weights(model)  # earlier tests trained the served weights
    tokenizer = load_tokenizer(str(model_dir))
    questions = ["3+4=", "9+9=", "1+2=", "5+0=", "8+1="]
    expected = []
    for question in questions:
        ids = tokenizer(question, return_tensors="pt")["input_ids"]
        out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        digit = re.search(r"\d", tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
        expected.append(float(digit.group(0)) if digit else 0.0)  # no verdict: a failed call, scored 0
    judge = LLMJudge(
        base_url=f"{url}/v1", model=str(model_dir), template="{question}", verdict_pattern=r"\d", scores={},
        endpoint="completions", api_key_env=KEY_ENV, max_tokens=12,
    )  # fmt: skip
    rows = [{"question": q, "prompt": q, "gold": ""} for q in questions]
    batch = RolloutBatch([[1]] * 5, [[2]] * 5, ["x"] * 5, [[0.0]] * 5, ["stop"] * 5, list(range(5)), rows)
    pipeline = RewardPipeline([RewardSpec(name="judge", function=judge)])
    pipeline.score(batch)
    assert batch.reward_components["judge"].tolist() == expected
    assert len(set(expected)) > 1
    sent = judge.requests_sent
    pipeline.score(batch)  # the same prompts again: answered from the cache
    assert judge.requests_sent == sent
    gone = LLMJudge(base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", retries=1, timeout_s=2)
    with pytest.raises(RLTuneError, match=r"(?s)failed on 5 of its 5 calls.*ConnectionError"):
        RewardPipeline([RewardSpec(name="gone", function=gone)]).score(batch)


@pytest.mark.slow
def test_rltune_eval_of_a_served_model_equals_the_in_process_engines(server, tmp_path):
    """`rltune eval --base-url` against the real server, and `rltune eval --model` with the in-process vLLM
    engine, on the same weights and seeds: the same samples (up to a few of vLLM's batch-dependent draws), so
    the same metrics."""
    from rltune.cli import main

    url, model_dir, data_file = server
    cfg = VLLMServerConfig(url=url, weight_sync="disk", sync_dir=str(tmp_path / "reset"), api_key_env=KEY_ENV)
    build_engine("vllm_server", server=cfg).sync_weights(AutoModelForCausalLM.from_pretrained(model_dir))
    common = [
        "eval", "--benchmarks", f"{data_file}:question:answer", "--n", "8", "--k", "1,8", "--limit", "40",
        "--max-tokens", "16", "--temperature", "1.0", "--top-p", "1.0", "--no-chat-template",
        "--instruction", "{question}",
    ]  # fmt: skip
    served = ["--base-url", url, "--api-key-env", KEY_ENV, "--tokenizer", str(model_dir), "--out", str(tmp_path / "s")]
    assert main([*common, *served]) == 0
    assert main([*common, "--model", str(model_dir), "--kv-cache-gib", "1", "--out", str(tmp_path / "local")]) == 0
    runs = [json.loads((tmp_path / run / "results.json").read_text()) for run in ("s", "local")]
    (a, b) = (run["benchmarks"]["arithmetic"] for run in runs)
    texts = [
        (x["text"], y["text"]) for p, q in zip(a["problems"], b["problems"]) for x, y in zip(p["samples"], q["samples"])
    ]
    assert sum(x == y for x, y in texts) >= 0.95 * len(texts) == 0.95 * 320
    assert a["metrics"]["mean@8"] == pytest.approx(b["metrics"]["mean@8"], abs=0.02)
    assert a["metrics"]["pass@8"] == pytest.approx(b["metrics"]["pass@8"], abs=0.05)
    assert 0.1 < a["metrics"]["mean@8"] < 0.9  # the demo model: some right, some wrong
    assert runs[0]["model"] == f"served model {model_dir}"
