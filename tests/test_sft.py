"""SFT: cross-entropy and Light-IF's entropy-preserving token selection; `rltune sft` end to end."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from rltune.sft import SFTLossConfig, sft_batch, sft_loss


def test_sft_batch_aligns_labels_with_next_token_logits():
    ids, attention, labels = sft_batch([[5, 6]], [[7, 8, 1]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8, 1]]
    assert labels.tolist() == [[-100, 7, 8, 1, -100]]  # logits at position t predict token t + 1
    assert attention.tolist() == [[1, 1, 1, 1, 1]]


def test_entropy_sft_keeps_the_top_tokens_by_ce_minus_entropy():
    # Token 0: confident and wrong (high CE, low entropy) -> kept. Token 1: uniform (high entropy) -> dropped.
    # Token 2: confident and right (low CE) -> dropped at ratio 1/3.
    logits = torch.tensor([[[8.0, 0.0, 0.0], [0.0, 0.0, 0.0], [8.0, 0.0, 0.0]]], requires_grad=True)
    labels = torch.tensor([[1, 1, 0]])
    ce = torch.nn.functional.cross_entropy(logits[0], labels[0], reduction="none")
    loss = sft_loss(logits, labels, SFTLossConfig("entropy_sft", token_ratio=1 / 3, entropy_coef=1.0))
    assert loss.item() == pytest.approx(ce[0].item())
    loss.backward()
    assert logits.grad[0, 0].abs().sum() > 0 and logits.grad[0, 1:].abs().sum() == 0
    full = sft_loss(logits, labels, SFTLossConfig("entropy_sft", token_ratio=1.0))
    assert full.item() == pytest.approx(ce.mean().item())
    assert sft_loss(logits, labels, SFTLossConfig("ce")).item() == pytest.approx(ce.mean().item())


def test_the_entropy_term_changes_which_tokens_are_kept():
    """Token 0: uniform over 20 (CE 3.00, entropy 3.00, score 0). Token 1: confident in a wrong token (CE 2.13,
    entropy 0.37, score 1.76). Cross-entropy alone keeps token 0; ce - entropy keeps token 1."""
    logits = torch.full((1, 2, 20), -30.0)
    logits[0, 0] = 0.0
    logits[0, 1, 0], logits[0, 1, 1] = 0.0, -2.0
    labels = torch.tensor([[1, 1]])
    ce = torch.nn.functional.cross_entropy(logits[0], labels[0], reduction="none")
    assert ce[0] > ce[1]
    loss = sft_loss(logits, labels, SFTLossConfig("entropy_sft", token_ratio=0.5, entropy_coef=1.0))
    assert loss.item() == pytest.approx(ce[1].item())
    cross_entropy_only = sft_loss(logits, labels, SFTLossConfig("entropy_sft", token_ratio=0.5, entropy_coef=0.0))
    assert cross_entropy_only.item() == pytest.approx(ce[0].item())


def test_padding_labels_are_never_selected():
    logits = torch.zeros(1, 3, 4)
    labels = torch.tensor([[2, -100, -100]])
    loss = sft_loss(logits, labels, SFTLossConfig("entropy_sft", token_ratio=1.0))
    assert loss.item() == pytest.approx(torch.log(torch.tensor(4.0)).item())


def test_rltune_sft_cli_trains_and_saves(tmp_path, tiny_model_dir, arithmetic_file):
    recipe = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"path": str(arithmetic_file), "instruction": "{question}", "use_chat_template": False},
        "sft": {"loss": "entropy_sft", "token_ratio": 0.8, "entropy_coef": 0.8},
        "train": {"steps": 40, "batch_size": 32, "lr": 3e-3, "output_dir": str(tmp_path / "out")},
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(recipe))
    proc = subprocess.run(
        [sys.executable, "-m", "rltune", "sft", str(path)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, last = (float(x) for x in proc.stdout.split("loss ")[1].split(" -> "))
    assert last < first * 0.7
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "qwen2"
    bad = subprocess.run(
        [sys.executable, "-m", "rltune", "sft", str(path), "sft.loss=focal"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "sft.loss must be one of" in bad.stderr


def test_an_unknown_sft_loss_is_refused_not_trained_as_entropy_sft():
    from rltune.errors import ConfigError
    from rltune.sft import SFTLossConfig

    with pytest.raises(ConfigError, match="sft.loss must be 'ce' or 'entropy_sft', got 'cross_entropy'"):
        SFTLossConfig("cross_entropy")


def test_a_batch_without_label_tokens_is_a_zero_loss_that_backpropagates():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    labels = torch.full((2, 3), -100)
    for cfg in (SFTLossConfig("ce"), SFTLossConfig("entropy_sft", token_ratio=0.5)):
        loss = sft_loss(logits, labels, cfg)
        assert loss.item() == 0.0
        loss.backward()
        assert logits.grad.abs().sum() == 0


def test_rltune_sft_in_process_returns_0_and_prints_the_loss(tmp_path, tiny_model_dir, arithmetic_file, capsys):
    import rltune.cli as cli

    recipe = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"path": str(arithmetic_file), "instruction": "{question}", "use_chat_template": False},
        "train": {"steps": 2, "batch_size": 4, "output_dir": str(tmp_path / "out")},
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert cli.main(["sft", str(path)]) == 0
    assert " -> " in capsys.readouterr().out.split("loss ")[1] and (tmp_path / "out" / "config.json").is_file()
