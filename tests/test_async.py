"""Asynchronous RL (train.async_steps): the staleness schedule, off-policy log-probs, reproducibility, resume,
and errors, on the demo model with the real hf and vLLM engines."""

import json
import time

import pytest
import torch

from conftest import deep_merge, demo_recipe
from rltune.checkpoint import load_state
from rltune.errors import ConfigError, RLTuneError
from rltune.trainer import Trainer


def recipe(tmp_path, demo_assets, async_steps, engine="hf", **sections):
    fast = {
        "rollout": {"engine": engine, "group_size": 4, "max_tokens": 12, "vllm": {"max_model_len": 64}},
        "train": {"steps": 5, "prompts_per_step": 4, "micro_batch_size": 16, "lr": 1e-3, "async_steps": async_steps},
    }
    return demo_recipe(tmp_path, *demo_assets, deep_merge(fast, sections))


def completion_logprobs(model, batch) -> list[torch.Tensor]:
    """Per-token log-probs of each sampled completion under `model`, from a plain forward (temperature 1)."""
    out = []
    with torch.no_grad():
        for prompt, completion in zip(batch.prompt_ids, batch.completion_ids):
            ids = torch.tensor([prompt + completion])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
            out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0])
    return out


def record(trainer):
    """The weights of every policy version (after each update) and the batch trained at each step."""
    versions = {0: {k: v.clone() for k, v in trainer.policy.state_dict().items()}}
    trained = {}
    update = trainer.updater.update

    def spy(batch, step):
        trained[step] = batch
        return update(batch, step)

    def after_step(trainer, step, metrics):
        versions[step] = {k: v.clone() for k, v in trainer.policy.state_dict().items()}

    trainer.updater.update = spy
    trainer.callbacks.insert(0, after_step)
    return versions, trained


@pytest.mark.parametrize("k", [1, 2])
def test_each_batch_is_sampled_by_the_weights_k_updates_old(tmp_path, demo_assets, k):
    """Version tags and log-probs agree: the batch of step s was sampled by the weights after max(s - k, 0)
    updates (the sampler's log-probs are that policy's, not the current one's), also right after a periodic
    eval borrowed the engine for the current weights. The engine is the hf engine made slower than the
    update, so that with k = 2 the batch of step 3 is sampled after step 1's eval, from version 0 again."""
    bench = f"{demo_assets[1]}:question:answer"
    eval_hook = {"every": 1, "benchmarks": [bench], "n": 2, "limit": 4, "temperature": 1.0, "top_p": 1.0}
    cfg = recipe(
        tmp_path,
        demo_assets,
        k,
        engine="plugins.engines:SlowEngine",
        eval=eval_hook,
        data={"instruction": "{question}"},
    )
    with Trainer(cfg) as trainer:
        versions, trained = record(trainer)
        trainer.train()
        model = trainer.policy
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["async/staleness_max"] for m in lines] == [min(s, k) for s in range(5)]
    assert all(m["async/staleness_mean"] == m["async/staleness_max"] for m in lines)
    assert all(m["async/update_wait_s"] >= 0 and m["async/generation_wait_s"] >= 0 for m in lines)
    assert all("eval/arithmetic/mean@2" in m for m in lines)  # each eval ran between the producer's batches
    for step, batch in trained.items():
        expected = max(step - k, 0)
        assert batch.policy_versions == [expected] * len(batch)
        sampler = [torch.tensor(lp) for lp in batch.sampling_logprobs]
        model.load_state_dict(versions[expected])
        behaviour = completion_logprobs(model, batch)
        assert max((a - b).abs().max().item() for a, b in zip(sampler, behaviour)) < 1e-4, step
        if expected != step:  # the current weights give other log-probs: the batch really is off-policy
            model.load_state_dict(versions[step])
            current = completion_logprobs(model, batch)
            assert max((a - b).abs().max().item() for a, b in zip(sampler, current)) > 1e-3, step


def test_async_zero_is_the_on_policy_loop(tmp_path, demo_assets):
    """async_steps=0 trains on batches of the current weights (version tags, no async metrics) and ends with
    the weights of a recipe that does not mention async_steps; async_steps=1 ends elsewhere."""

    def final(folder, k):
        with Trainer(recipe(tmp_path / folder, demo_assets, k, train={"steps": 3})) as trainer:
            versions, trained = record(trainer)
            trainer.train()
        assert all(b.policy_versions == [s] * len(b) for s, b in trained.items()) or k
        return versions[3]

    default = final("default", 0)
    lines = [json.loads(x) for x in (tmp_path / "default" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not any(key.startswith("async/") for m in lines for key in m)
    one = final("async", 1)
    assert any(not torch.equal(default[n], one[n]) for n in default)


@pytest.mark.parametrize("engine, k", [("hf", 1), ("hf", 2), pytest.param("vllm", 1, marks=pytest.mark.slow)])
def test_async_runs_reproduce_and_resume_exactly(tmp_path, demo_assets, engine, k):
    """Two async runs with the same seed give the same metrics and weights; a run resumed from a checkpoint
    (holding the k batches already sampled for the next steps) ends as the uninterrupted one did."""
    if engine == "vllm":
        pytest.importorskip("vllm")

    def run(folder, **train):
        cfg = recipe(
            tmp_path / folder, demo_assets, k, engine=engine, train={"save_every": 2, "keep_checkpoints": 5, **train}
        )
        with Trainer(cfg) as trainer:
            start = trainer.step
            trainer.train()
            weights = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
        lines = [json.loads(x) for x in (tmp_path / folder / "run" / "metrics.jsonl").read_text().splitlines()]
        return start, weights, lines

    _, first, first_lines = run("a")
    _, second, second_lines = run("b")
    keys = ("reward/total", "loss", "grad_norm", "entropy", "async/staleness_max")
    assert [[m[k] for k in keys] for m in first_lines] == [[m[k] for k in keys] for m in second_lines]
    assert all(torch.equal(first[n], second[n]) for n in first)

    assert all(0 <= m["async/generation_wait_s"] < 300 for m in first_lines)  # seconds the producer waited
    state = load_state(tmp_path / "a" / "run" / "checkpoint-2")
    # steps 3..2+k's batches, each sampled by the weights k updates before its step
    assert [p["policy_versions"][0] for p in state["in_flight"]] == [2 + i - k for i in range(k)]
    start, resumed, resumed_lines = run("c", resume_from=str(tmp_path / "a" / "run" / "checkpoint-2"))
    assert start == 2
    assert [[m[k] for k in keys] for m in resumed_lines] == [[m[k] for k in keys] for m in first_lines[2:]]
    assert all(torch.equal(first[n], resumed[n]) for n in first)


def test_async_with_dynamic_sampling_and_a_group_reward(tmp_path, demo_assets):
    """Dynamic sampling's extra rounds and a group reward (DARLING's partition) run on the producer thread,
    from the batch's own weights."""
    darling = {"name": "diversity_partition", "kwargs": {"judge": "answer", "quality": "math_accuracy"}}
    cfg = recipe(
        tmp_path,
        demo_assets,
        1,
        rewards=[{"name": "math_accuracy", "weight": 0.0}, darling],
        algorithm={"dynamic_sampling": True, "dynamic_sampling_reward": "math_accuracy", "max_sampling_rounds": 3},
        train={"steps": 3},
    )
    with Trainer(cfg) as trainer:
        _, trained = record(trainer)
        trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["async/staleness_max"] for m in lines] == [0, 1, 1]
    assert all("dynamic_sampling/rounds" in m and "reward/diversity_partition" in m for m in lines)
    assert all(len(set(b.policy_versions)) == 1 for b in trained.values())  # every round from one version


def test_async_recompute_measures_the_policy_lag_and_weights_it(tmp_path, demo_assets):
    """With old_logprobs=recompute the ratio's old policy is the trainer's weights before the update, and the
    truncated IS weight carries the distance to the (older) sampler: at step 1 (sampled by the current
    weights) the mismatch is kernel noise, afterwards it is the lag of one update at lr 1e-2."""
    cfg = recipe(
        tmp_path,
        demo_assets,
        1,
        algorithm={"old_logprobs": "recompute", "is_correction": "tis"},
        train={"steps": 4, "lr": 1e-2},
    )
    with Trainer(cfg) as trainer:
        trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["mismatch/log_ratio_abs_mean"] < 1e-5
    assert all(m["mismatch/log_ratio_abs_mean"] > 1e-3 for m in lines[1:])
    assert all(abs(m["is/weight_mean"] - 1) > 1e-4 for m in lines[1:])


def test_a_stuck_engine_stops_an_async_run_with_the_timeout_error(tmp_path, demo_assets):
    cfg = recipe(tmp_path, demo_assets, 1, rollout={"engine": "plugins.my_engines:StuckEngine", "timeout_s": 1.0})
    started = time.monotonic()
    with Trainer(cfg) as trainer, pytest.raises(RLTuneError, match=r"produced no batch in 1s \(rollout.timeout_s\)"):
        trainer.train()
    assert time.monotonic() - started < 30


def test_async_settings_that_cannot_work_are_refused(tmp_path, demo_assets):
    with pytest.raises(ConfigError, match="rollout.vllm.sleep"):
        recipe(tmp_path, demo_assets, 1, engine="vllm", rollout={"vllm": {"sleep": True}})
    with pytest.raises(ConfigError, match="train.async_steps"):
        recipe(tmp_path, demo_assets, -1)
    with Trainer(recipe(tmp_path / "a", demo_assets, 1, train={"steps": 2})) as trainer:
        trainer.train()
    changed = recipe(
        tmp_path / "b",
        demo_assets,
        2,
        train={"steps": 3, "resume_from": str(tmp_path / "a" / "run" / "checkpoint-2")},
    )
    with pytest.raises(RLTuneError, match="train.async_steps"):
        Trainer(changed)


def test_a_batch_in_flight_is_saved_and_restored_whole():
    from rltune.async_rollouts import Produced, produced_from_state, produced_state
    from rltune.batch import RolloutBatch

    batch = RolloutBatch(
        prompt_ids=[[1, 2]] * 2, completion_ids=[[3], [4, 5]], completion_texts=["a", "bc"],
        sampling_logprobs=[[-0.5], [-0.1, -0.2]], finish_reasons=["stop", "length"], group_ids=[0, 0],
        rows=[{"prompt": "p", "gold": "1"}], rewards=torch.tensor([1.0, 0.0]),
        reward_components={"acc": torch.tensor([1.0, 0.0]), "fmt": torch.tensor([0.25, 0.25])},
        token_returns=torch.ones(2, 2), policy_versions=[3, 3],
    )  # fmt: skip
    produced = Produced(batch, {"time/rollout_s": 1.5}, {"epoch": 0, "position": 8})
    state = torch.load(_roundtrip(produced_state(produced)), weights_only=True)
    back = produced_from_state(state)
    assert back.metrics == produced.metrics and back.data_after == produced.data_after
    for name in ("prompt_ids", "completion_ids", "completion_texts", "sampling_logprobs", "finish_reasons",
                 "group_ids", "rows", "policy_versions"):  # fmt: skip
        assert getattr(back.batch, name) == getattr(batch, name), name
    assert torch.equal(back.batch.rewards, batch.rewards) and torch.equal(back.batch.token_returns, batch.token_returns)
    assert {k: v.tolist() for k, v in back.batch.reward_components.items()} == {"acc": [1.0, 0.0], "fmt": [0.25, 0.25]}


def _roundtrip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer
