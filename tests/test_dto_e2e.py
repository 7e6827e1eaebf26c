"""DTO end to end on the thinking demo model: `rltune demo-model --thinking`, `rltune prune` with the real
vLLM CPU engine and the real grader, `rltune prefer` (SimPO through trl's CPOTrainer), each a real
subprocess. Asserts shorter optimised traces, rescued wrong traces, and a wider length-normalised
preference margin of the trained model on the pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_rltune

pytestmark = [pytest.mark.slow, pytest.mark.heavy]


def mean_margin(model_dir: Path, pairs) -> float:
    """Mean over pairs of (chosen - rejected) per-token log-probability: what SimPO widens."""
    from transformers import AutoModelForCausalLM

    from rltune.models import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def avg_logp(prompt: str, response: str) -> float:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        r = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = torch.tensor([p + r])
        with torch.no_grad():
            logp = model(ids).logits[0, :-1].log_softmax(-1)
        picked = logp[len(p) - 1 :].gather(-1, torch.tensor(r)[:, None])
        return picked.mean().item()

    margins = [avg_logp(x["prompt"], x["chosen"]) - avg_logp(x["prompt"], x["rejected"]) for x in pairs]
    return sum(margins) / len(margins)


def test_prune_then_prefer_on_the_thinking_demo(tmp_path):
    pytest.importorskip("vllm")
    from datasets import load_from_disk

    root = tmp_path / "dto-demo"
    run_rltune("demo-model", str(root), "--thinking", "--warmup-steps", "400", cwd=tmp_path)
    overrides = [
        f"model.path={root / 'model'}",
        f"data.path={root / 'arithmetic.jsonl'}",
        f"pairs.output_dir={root / 'pairs'}",
        f"prefer.output_dir={root / 'simpo'}",
        "prefer.steps=20",
    ]
    recipe = str(REPO / "recipes" / "dto_cpu.yaml")
    run_rltune("prune", recipe, *overrides, cwd=tmp_path)
    summary = json.loads((root / "pairs" / "summary.json").read_text())
    assert summary["pairs"] >= 50, summary
    assert summary["rescued"] >= 10, summary
    assert summary["mean_tokens_optimised"] < 0.85 * summary["mean_tokens_original"], summary
    assert summary["attention_flops_ratio_optimised"] < 0.8, summary
    pairs = load_from_disk(str(root / "pairs" / "dataset"))
    assert all(row["chosen_tokens"] < row["rejected_tokens"] or not row["rejected_correct"] for row in pairs)

    out = run_rltune("prefer", recipe, *overrides, cwd=tmp_path).stdout
    result = json.loads(out.split("rltune prefer (simpo): ", 1)[1].split("; model saved", 1)[0])
    assert result["loss_last"] < result["loss_first"], result
    sample = pairs.select(range(40))
    before, after = mean_margin(root / "model", sample), mean_margin(root / "simpo", sample)
    assert after > before + 0.05, (before, after)
