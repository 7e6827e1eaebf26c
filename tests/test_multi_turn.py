"""Multi-turn rollouts: the sandbox, the python_tool environment, token-in-token-out trajectories on the real
engines, and an update that trains on the model's tokens only."""

import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM

from conftest import REPO, demo_recipe
from plugins.my_envs import Recheck
from rltune.environments import build_environment
from rltune.models import load_tokenizer
from rltune.rollout import SamplingSettings, build_engine
from rltune.rollout.multi_turn import generate_multi_turn
from rltune.sandbox import SandboxLimits, run_python

LIMITS = SandboxLimits(timeout_s=3.0, cpu_s=1, memory_mb=512, file_size_mb=1, max_output_chars=300)

# Each escape the sandbox must contain, and a piece of the error the model reads back.
ESCAPES = {
    "infinite loop": ("while True:\n    pass", "CPU time limit"),
    "sleeping past the wall clock": ("import time\ntime.sleep(20)", "ran past 3s"),
    # a fork bomb's first fork is refused; bounded (32 processes at most) should the refusal ever break
    "fork bomb": ("import os\nfor _ in range(5):\n    os.fork()", "does not allow os.fork"),
    "a subprocess": ("import subprocess\nsubprocess.run(['ls', '/'])", "does not allow subprocess.Popen"),
    "a gigabyte of output": ("while True:\n    print('x' * 65536)", "output over 1 MiB"),
    "the trainer's secrets in /proc": ("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())", "opening"),
    "the user's home folder": ("import os, pwd\nprint(os.listdir(pwd.getpwuid(os.getuid()).pw_dir))", "not allow"),
    "a file outside its folder": ("open('{outside}', 'w').write('x')", "does not allow opening"),
    "a network socket": ("import socket\nsocket.create_connection(('127.0.0.1', 9))", "does not allow socket"),
    "all the memory": ("x = bytearray(4 * 1024**3)", "MemoryError"),
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_the_sandbox_contains_each_escape_and_returns_it_as_the_tools_error(name, monkeypatch, tmp_path):
    monkeypatch.setenv("RLTUNE_TEST_SECRET", "hunter2-secret-value")
    code, error = ESCAPES[name]
    outside = tmp_path / "escaped"
    result = run_python(code.replace("{outside}", str(outside)), LIMITS)
    assert not result.ok
    assert error in result.output, result.output
    assert len(result.output) <= LIMITS.max_output_chars + 100  # cut to the budget, plus the error line
    assert "hunter2" not in result.output
    assert not outside.exists()


def test_the_sandbox_runs_ordinary_code_in_a_clean_folder_and_environment(monkeypatch):
    monkeypatch.setenv("RLTUNE_TEST_SECRET", "hunter2-secret-value")
    code = (
        "import os, numpy\n"
        "open('scratch.txt', 'w').write('kept?')\n"
        "print(sorted(os.environ), os.listdir('.'), numpy.arange(4).sum(), os.getcwd())"
    )
    result = run_python(code, LIMITS)
    assert result.ok, result.output
    assert "RLTUNE_TEST_SECRET" not in result.output and "scratch.txt" in result.output and " 6 " in result.output
    folder = result.output.split()[-1]
    assert folder.startswith("/tmp/rltune-tool-") and not os.path.exists(folder)  # removed afterwards
    failed = run_python("print('before')\n1 / 0", LIMITS)
    assert not failed.ok and failed.output.startswith("before\nTraceback") and "ZeroDivisionError" in failed.output
    assert '"<tool>", line 2' in failed.output and "_RUNNER" not in failed.output


def test_python_tool_runs_the_block_a_turn_ends_with_and_ends_the_episode_without_one():
    env = build_environment("python_tool", timeout_s=3.0, cpu_s=1)
    state = env.start({})
    assert env.stop == ["```"]
    observation = env.step(state, "Let me compute.\n```python\nprint(123 * 456)\n```")
    assert observation == "\n```output\n56088\n```\n"
    observation = env.step(state, "```python\nwhile True: pass\n```")
    assert "CPU time limit" in observation
    assert env.step(state, "So the answer is \\boxed{56088}.") is None
    assert env.stats(state) == {"tool_calls": 2.0, "tool_errors": 1.0, "tool_timeouts": 1.0}


def policy_logprobs(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def check_trajectories(engine, model, tokenizer) -> None:
    """Token in, token out: each trajectory is the sampled ids of the model's turns and the observation's
    own ids, masked as such; the sampler's logprobs of the model's tokens are the policy's in the whole
    trajectory's context; budgets and turns are respected; the same seeds give the same trajectories."""
    env = Recheck()
    observation_ids = tokenizer(env.observation, add_special_tokens=False)["input_ids"]
    prompts = [tokenizer("3+4=")["input_ids"], tokenizer("12+9=")["input_ids"]]
    sampling = SamplingSettings(n=3, temperature=1.0, max_tokens=40, prompt_seeds=[1, 2])
    batch = generate_multi_turn(engine, env, tokenizer, prompts, [{}, {}], sampling, max_turns=3)
    again = generate_multi_turn(engine, env, tokenizer, prompts, [{}, {}], sampling, max_turns=3)
    assert again.completion_ids == batch.completion_ids
    assert len(batch) == 6 and batch.group_ids == [0, 0, 0, 1, 1, 1]
    several = 0
    for i in range(len(batch)):
        tokens, mask, turns = batch.completion_ids[i], batch.model_masks[i], batch.turns[i]
        assert len(tokens) == len(mask) == len(batch.sampling_logprobs[i]) <= 40
        assert [m["role"] for m in turns] == ["assistant", "tool"] * (len(turns) // 2) + ["assistant"] * (
            len(turns) % 2
        )
        assert sum(m["role"] == "assistant" for m in turns) <= 3
        assert batch.episode_stats[i]["answers"] == sum(m["role"] == "tool" for m in turns)
        several += len(turns) >= 3
        # the environment's stretches are exactly the observation's ids; the rest is the model's
        position = 0
        for message in turns:
            if message["role"] == "tool":
                assert tokens[position : position + len(observation_ids)] == observation_ids
                assert mask[position : position + len(observation_ids)] == [0] * len(observation_ids)
                position += len(observation_ids)
            else:
                while position < len(mask) and mask[position]:
                    position += 1
        assert position == len(tokens)
        model_positions = [t for t in range(len(tokens)) if mask[t]]
        expected = policy_logprobs(model, batch.prompt_ids[i], tokens)[model_positions]
        sampled = torch.tensor(batch.sampling_logprobs[i])[model_positions]
        assert torch.allclose(expected, sampled, atol=1e-3), i
        assert all(batch.sampling_logprobs[i][t] == 0.0 for t in range(len(tokens)) if not mask[t])
    assert several >= 2  # the environment answered, and the model took another turn


def test_multi_turn_trajectories_on_the_hf_engine(demo_assets):
    model_dir, _ = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    check_trajectories(build_engine("hf", model=model, tokenizer=tokenizer), model, tokenizer)


def test_the_update_trains_on_the_models_tokens_only(tmp_path, demo_assets):
    """On a multi-turn batch, the update's gradient is the clipped objective's over the model's tokens alone
    (token_mean over their count), and the loss's gradient with respect to the logits at the positions
    that predict observation tokens is exactly 0."""
    from rltune.trainer import Trainer

    cfg = demo_recipe(
        tmp_path,
        *demo_assets,
        {
            "rollout": {
                "engine": "hf",
                "group_size": 4,
                "max_tokens": 40,
                "max_turns": 3,
                "environment": "plugins.my_envs:Recheck",
            },
            "train": {
                "steps": 1,
                "prompts_per_step": 2,
                "fused_lm_head": False,
                "packing": False,
                "micro_batch_size": 64,
            },
        },
    )
    with Trainer(cfg) as trainer:
        batch, _ = trainer.collect_rollouts()
        batch.advantages = trainer.advantage_fn(batch.rewards, batch.groups())
        assert any(0 in m for m in batch.model_masks)
        indices = list(range(len(batch)))
        head = trainer.model.get_output_embeddings()
        captured = []

        def keep_logits(_module, _args, out):
            out.retain_grad()
            captured.append(out)

        hook = head.register_forward_hook(keep_logits)
        trainer.optimizer.zero_grad()
        try:
            loss, _ = trainer.updater.micro_step(batch, indices, trainer.updater.normalizer(batch, indices))
            loss.backward()
        finally:
            hook.remove()
        got = [p.grad.clone() for p in trainer.model.parameters()]
        mb = trainer.updater.collate(batch, indices)
        logits_grad = captured[0].grad  # [rows, kept columns, vocab]
        kept_from = mb.input_ids.shape[1] - logits_grad.shape[1]
        rows, cols = [], []
        for row, i in enumerate(indices):
            prompt, mask = batch.prompt_ids[i], batch.model_masks[i]
            start = max(len(batch.prompt_ids[j]) for j in indices) - len(prompt)  # left padding
            for t, own in enumerate(mask):
                if not own:
                    rows.append(row)
                    cols.append(start + len(prompt) - 1 + t - kept_from)
        assert rows and (logits_grad[rows, cols] == 0).all()

        # the formula, by hand: -A * ratio over the model's tokens, summed, over their count
        trainer.optimizer.zero_grad()
        total = sum(sum(m) for m in batch.model_masks)
        for i in indices:
            prompt, tokens, mask = batch.prompt_ids[i], batch.completion_ids[i], batch.model_masks[i]
            logits = trainer.model(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
            logprobs = logits.log_softmax(-1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)
            own = torch.tensor(mask, dtype=torch.bool)
            old = torch.tensor(batch.sampling_logprobs[i])
            ratio = torch.exp(logprobs[own] - old[own])
            (-(batch.advantages[i] * ratio).sum() / total).backward()
        expected = [p.grad for p in trainer.model.parameters()]
        for a, b in zip(got, expected):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-3)


def test_a_multi_turn_run_logs_its_episodes_and_trajectories(tmp_path, demo_assets, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from rltune.trainer import Trainer

    cfg = demo_recipe(
        tmp_path,
        *demo_assets,
        {
            "rollout": {"engine": "hf", "group_size": 4, "max_tokens": 40, "environment": "plugins.my_envs:Recheck"},
            "train": {
                "steps": 2,
                "prompts_per_step": 2,
                "log_completions_every": 1,
                "report_to": ["tensorboard", "wandb"],
            },
            # DARLING on episodes: its partition is of the model's turns (the observations are all alike)
            "rewards": [{"name": "math_accuracy", "weight": 0.0}, {"name": "diversity_partition"}],
        },
    )
    with Trainer(cfg) as trainer:
        trainer.train()
    step = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert 1 <= step["reward/diversity_partition/partitions"] <= 4
    assert 1 <= step["episode/turns_mean"] <= step["episode/turns_max"] <= 4
    assert step["episode/observation_tokens_mean"] > 0 and step["env/answers"] > 0
    logged = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    assert any(len(row["turns"]) >= 3 for row in logged)
    assert all(row["completion"] == "".join(m["content"] for m in row["turns"]) for row in logged)
    # the trackers' tables show each episode turn by turn under its role
    episode = next(row["turns"] for row in reversed(logged) if len(row["turns"]) >= 3)
    shown = "\n".join(f"[{m['role']}]\n{m['content']}" for m in episode)
    (wandb_run,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    table = json.loads(
        sorted((wandb_run / "files" / "media" / "table").glob("completions_*.table.json"))[-1].read_text()
    )
    assert shown in [row[table["columns"].index("turns")] for row in table["data"]]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "rltune"), size_guidance={"tensors": 0})
    events.Reload()
    text = events.Tensors("completions/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert shown.replace("\n", "<br>") in text


def episode_batch(episodes: list[list[tuple[str, str]]], gold: str, conversational: bool = False):
    """One group of multi-turn samples, each given as (role, content) messages."""
    from rltune.batch import RolloutBatch

    turns = [[{"role": role, "content": text} for role, text in episode] for episode in episodes]
    texts = ["".join(m["content"] for m in t) for t in turns]
    row = {"gold": gold, **({"messages": [{"role": "user", "content": "2+5="}]} if conversational else {})}
    return RolloutBatch(
        prompt_ids=[[1]] * len(texts),
        completion_ids=[[2] * len(t) for t in texts],
        completion_texts=texts,
        sampling_logprobs=[[0.0] * len(t) for t in texts],
        finish_reasons=["stop"] * len(texts),
        group_ids=[0] * len(texts),
        rows=[row],
        model_masks=[[1] * len(t) for t in texts],
        turns=turns,
    )


def test_rewards_read_the_models_answer_and_words_not_the_tools_output():
    """The answer rewards grade the model's last turn (as eval does), not a box the tool printed; DARLING
    partitions episodes by the model's own turns; a trl reward gets the episode's messages with their roles."""
    from rltune.config import RewardSpec
    from rltune.reward_pipeline import RewardPipeline

    code = "```python\nprint(2+5)\n```"
    batch = episode_batch(
        [
            [("assistant", code), ("tool", "\\boxed{7}"), ("assistant", "\\boxed{9}")],
            [("assistant", code), ("tool", "\\boxed{9}"), ("assistant", "\\boxed{7}")],
            [("assistant", code), ("tool", "7 and more output"), ("assistant", "\\boxed{7}")],
            [("assistant", "\\boxed{8}")],
        ],
        gold="7",
    )
    specs = [
        RewardSpec("math_accuracy", 0.0),
        RewardSpec("format", 0.0),
        RewardSpec("diversity_partition", 1.0, kwargs={"judge": "ngram"}),
    ]
    RewardPipeline(specs).score(batch)
    parts = batch.reward_components
    assert parts["math_accuracy"].tolist() == [0, 1, 1, 0]
    # episodes 2 and 3 differ only in the tool's output: the same words of the model, so no diversity
    div = parts["diversity_partition/diversity"].tolist()
    assert div[1] == div[2] == pytest.approx(0.1) and div[0] > 0.1 and div[3] > 0.1
    seen = {}

    def trl_reward(completions, **kwargs):
        seen["completions"] = completions
        return [float(c[-1]["content"] == "\\boxed{7}") for c in completions]

    conversational = episode_batch([[("assistant", code), ("tool", "7"), ("assistant", "\\boxed{7}")]] * 2, "7", True)
    RewardPipeline([RewardSpec(function=trl_reward)]).score(conversational)
    assert [m["role"] for m in seen["completions"][0]] == ["assistant", "tool", "assistant"]
    assert conversational.rewards.tolist() == [1.0, 1.0]


def merging_tokenizer(tokenizer):
    """The demo's character tokenizer plus merges ('o'+'x', 'e'+'d', 'ox'+'ed'): "boxed", which the demo
    model writes one character at a time, tokenises again into other, fewer ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = dict(tokenizer.get_vocab())
    for piece in ("ox", "ed", "oxed"):
        vocab[piece] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[("o", "x"), ("e", "d"), ("ox", "ed")]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


class RecordingEngine:
    """The real engine, with the prompt ids of every call kept."""

    def __init__(self, engine):
        self.engine, self.calls = engine, []

    def generate(self, prompt_ids, rows, sampling):
        self.calls.append([list(ids) for ids in prompt_ids])
        return self.engine.generate(prompt_ids, rows, sampling)


def test_each_turn_continues_from_the_sampled_ids_not_from_the_text_tokenised_again(demo_assets):
    """With a tokenizer whose merges make tokenising the text again give other ids than those sampled, every
    later turn's context is still the prompt plus exactly the ids sampled and observed so far."""
    model_dir, _ = demo_assets
    tokenizer = merging_tokenizer(load_tokenizer(str(model_dir)))
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.resize_token_embeddings(len(tokenizer))
    written = "".join(tokenizer.convert_ids_to_tokens(tokenizer("\\boxed{7}")["input_ids"]))
    assert len(tokenizer("\\boxed{7}")["input_ids"]) < len("\\boxed{7}"), written  # the merges apply
    engine = RecordingEngine(build_engine("hf", model=model, tokenizer=tokenizer))
    prompts = [tokenizer("3+4=")["input_ids"], tokenizer("12+9=")["input_ids"]]
    sampling = SamplingSettings(n=3, temperature=1.0, max_tokens=40, prompt_seeds=[1, 2])
    batch = generate_multi_turn(engine, Recheck(), tokenizer, prompts, [{}, {}], sampling, max_turns=3)
    trajectories = [p + c for p, c in zip(batch.prompt_ids, batch.completion_ids)]
    later = [context for call in engine.calls[1:] for context in call]
    assert later and all(any(t[: len(context)] == context for t in trajectories) for context in later)
    assert any(tokenizer(tokenizer.decode(context))["input_ids"] != context for context in later)


@pytest.mark.heavy  # minutes: dynamic sampling's rounds of multi-turn episodes
def test_multi_turn_samples_go_through_dynamic_sampling_and_asynchronous_rollouts(tmp_path, demo_assets):
    """Dynamic sampling's rounds join multi-turn batches, and the asynchronous producer samples episodes
    ahead (their masks and turns kept through the hand-over)."""
    from rltune.trainer import Trainer

    cfg = demo_recipe(
        tmp_path,
        *demo_assets,
        {
            "rollout": {"engine": "hf", "group_size": 4, "max_tokens": 40, "environment": "plugins.my_envs:Recheck"},
            "algorithm": {"dynamic_sampling": True},
            "train": {"steps": 2, "prompts_per_step": 2, "async_steps": 1},
        },
    )
    with Trainer(cfg) as trainer:
        trainer.train()
        batch = trainer.last_batch
    assert batch.model_masks is not None and len(batch.model_masks) == len(batch) == len(batch.turns)
    assert any(0 in mask for mask in batch.model_masks)
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("episode/turns_mean" in step and "dynamic_sampling/rounds" in step for step in steps)


@pytest.mark.heavy  # a minute: a warm-up, then episodes through the sandbox
def test_the_tool_recipe_trains_a_few_steps_with_the_sandboxed_tool(tmp_path):
    """recipes/tool_cpu.yaml for two steps (the hf engine, a short warm-up on tool-using traces): the model
    calls the tool, the sandbox answers, and the trajectories are trained on."""
    from rltune.config import load_recipe
    from rltune.demo import write_demo_assets
    from rltune.trainer import Trainer

    model_dir, data_file = tmp_path / "model", tmp_path / "data" / "multiplication.jsonl"
    write_demo_assets(model_dir, data_file, warmup_steps=60, task="tool", progress=False)
    assert (data_file.parent / "heldout.jsonl").is_file()
    overrides = [
        f"model.path={model_dir}",
        f"data.path={data_file}",
        f"train.output_dir={tmp_path / 'run'}",
        "rollout.engine=hf",
        "train.steps=2",
        "train.prompts_per_step=4",
        "train.progress_bar=false",
        "train.report_to=[]",
        "train.log_completions_every=1",
    ]
    with Trainer(load_recipe(REPO / "recipes" / "tool_cpu.yaml", overrides)) as trainer:
        trainer.train()
    steps = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 2 and all(step["env/tool_calls"] > 0.5 for step in steps)
    logged = [json.loads(line) for line in (tmp_path / "run" / "completions.jsonl").read_text().splitlines()]
    outputs = [m["content"] for row in logged for m in row["turns"] if m["role"] == "tool"]
    assert outputs and all(o.startswith("<out>") for o in outputs)  # (cut short where the budget ends)
    printed = [o[len("<out>") : -len("</out>")] for o in outputs if o.endswith("</out>")]
    assert sum(p.isdigit() for p in printed) >= len(outputs) // 2  # the products the sandbox computed


def test_eval_samples_episodes_and_grades_the_last_model_turn(tmp_path, demo_assets):
    from rltune.eval.runner import EvalSettings, evaluate

    model_dir, data_file = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    engine = build_engine("hf", model=AutoModelForCausalLM.from_pretrained(model_dir), tokenizer=tokenizer)
    plain = dict(benchmarks=[f"{data_file}:question:answer"], n=4, limit=6, temperature=1.0, top_p=1.0)
    plain.update(max_tokens=40, instruction="{question}", use_chat_template=False)
    with_env = EvalSettings(**plain, environment="plugins.my_envs:Recheck", max_turns=3)
    results = evaluate(engine, tokenizer, with_env, cache_dir=tmp_path / "cache", progress=False)
    problems = next(iter(results["benchmarks"].values()))["problems"]
    samples = [s for p in problems for s in p["samples"]]
    assert any(len(s["turns"]) >= 3 for s in samples)
    for s in samples:
        last = [m["content"] for m in s["turns"] if m["role"] == "assistant"][-1]
        assert s["text"] == last  # graded: the answer of the last model turn
    alone = evaluate(engine, tokenizer, EvalSettings(**plain), cache_dir=tmp_path / "cache", progress=False)
    plain_samples = [s for p in next(iter(alone["benchmarks"].values()))["problems"] for s in p["samples"]]
    assert all("turns" not in s for s in plain_samples)  # the tool's cache entries are not reused


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    return a * b


def divide(a: float, b: float) -> float:
    """Divide a by b.

    Args:
        a: The dividend.
        b: The divisor.
    """
    return a / b


# A small chat template of our own that writes tools and tool messages (the shape of Qwen2.5's).
TOOL_TEMPLATE = (
    "{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>{% endif %}"
    "{%- for m in messages %}{%- if m.role == 'tool' %}<|user|><tool_response>{{ m.content }}</tool_response><|end|>"
    "{%- else %}<|{{ m.role }}|>{{ m.content }}<|end|>{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{%- endif %}"
)


def test_tool_calling_takes_trl_style_functions_and_answers_in_the_chat_templates_words(demo_assets):
    import datasets
    from transformers.utils import get_json_schema

    from rltune.config import DataConfig
    from rltune.data import PromptSource

    tokenizer = load_tokenizer(str(demo_assets[0]))
    tokenizer.chat_template = TOOL_TEMPLATE
    env = build_environment("tool_calling", tokenizer, tools=[multiply, "test_multi_turn:divide"])
    assert env.tools == [get_json_schema(multiply), get_json_schema(divide)] and env.stop == ["</tool_call>"]
    data = datasets.Dataset.from_list([{"question": "6*7=", "answer": "42"}])
    prompts = PromptSource(DataConfig(path="x", instruction="{question}"), tokenizer, dataset=data, tools=env.tools)
    assert prompts.rows[0]["prompt"] == (
        f"<tools>{json.dumps(env.tools[0])}{json.dumps(env.tools[1])}</tools><|user|>6*7=<|end|><|assistant|>"
    )
    state = env.start({})
    call = 'Let me call it. <tool_call>{"name": "multiply", "arguments": {"a": 6, "b": 7}}</tool_call>'
    assert env.step(state, call) == "<|end|><|user|><tool_response>42</tool_response><|end|><|assistant|>"
    for bad, error in (
        ("<tool_call>{not json}</tool_call>", "not a call of one of the tools (multiply, divide)"),
        ('<tool_call>{"name": "add", "arguments": {}}</tool_call>', "KeyError"),
        ('<tool_call>{"name": "multiply", "arguments": {"a": 6}}</tool_call>', "multiply raised TypeError"),
        ('<tool_call>{"name": "divide", "arguments": {"a": 1, "b": 0}}</tool_call>', "divide raised ZeroDivisionError"),
    ):
        assert error in env.step(state, bad)
    assert env.step(state, "The answer is \\boxed{42}.") is None
    assert env.stats(state) == {"tool_calls": 5.0, "tool_errors": 4.0}
    with pytest.raises(Exception, match="chat template"):
        PromptSource(
            DataConfig(path="x", instruction="{question}", use_chat_template=False),
            tokenizer,
            dataset=data,
            tools=env.tools,
        )


def test_an_observation_past_the_token_budget_is_cut_to_it_and_ends_the_episode(demo_assets):
    model_dir, _ = demo_assets
    tokenizer = load_tokenizer(str(model_dir))
    engine = build_engine("hf", model=AutoModelForCausalLM.from_pretrained(model_dir), tokenizer=tokenizer)
    env = Recheck(observation="\nAgain: " + "1+" * 40 + "1=")  # longer than what any sample has left
    prompts = [tokenizer("3+4=")["input_ids"], tokenizer("12+9=")["input_ids"]]
    sampling = SamplingSettings(n=4, temperature=1.0, max_tokens=30, prompt_seeds=[1, 2])
    batch = generate_multi_turn(engine, env, tokenizer, prompts, [{}, {}], sampling, max_turns=3)
    answered = [i for i in range(len(batch)) if batch.episode_stats[i]["answers"]]
    assert len(answered) >= 2  # every answer that closed a brace drew the long observation
    for i in answered:
        tokens, mask, turns = batch.completion_ids[i], batch.model_masks[i], batch.turns[i]
        assert [m["role"] for m in turns] == ["assistant", "tool"] and batch.finish_reasons[i] == "length"
        assert len(tokens) == 30  # the observation filled what the budget had left
        cut = tokens[sum(mask) :]
        assert mask == [1] * sum(mask) + [0] * len(cut) and turns[1]["content"] == tokenizer.decode(cut)
        assert cut == tokenizer(env.observation, add_special_tokens=False)["input_ids"][: len(cut)]
