"""Which checkpoint a resume picks, and how a damaged trainer state is named (without a training run: the
resume paths through the trainer are in test_reliability.py)."""

from __future__ import annotations

import pytest
import torch

from rltune.checkpoint import STATE_FILE, STATE_KEYS, list_checkpoints, load_state, resolve_checkpoint
from rltune.errors import RLTuneError


def _checkpoint(folder, state=None):
    folder.mkdir(parents=True)
    torch.save(state if state is not None else {key: [{}] if key == "rng" else 0 for key in STATE_KEYS},
               folder / STATE_FILE)  # fmt: skip
    return folder


def test_latest_is_the_newest_complete_checkpoint_and_a_path_is_taken_as_named(tmp_path, monkeypatch):
    run = tmp_path / "run"
    for step in (2, 10, 9):
        _checkpoint(run / f"checkpoint-{step}")
    (run / "checkpoint-11").mkdir()  # no state: a save that did not finish
    assert [p.name for p in list_checkpoints(run)] == ["checkpoint-2", "checkpoint-9", "checkpoint-10"]
    assert resolve_checkpoint("latest", run) == run / "checkpoint-10"
    monkeypatch.chdir(tmp_path)
    for named in ("run/checkpoint-2", "run/checkpoint-9", str(run / "checkpoint-2")):
        assert resolve_checkpoint(named, run) == type(run)(named)
    with pytest.raises(RLTuneError, match="is not a checkpoint folder"):
        resolve_checkpoint("run/checkpoint-11", run)
    with pytest.raises(RLTuneError, match="holds no complete checkpoint"):
        resolve_checkpoint("latest", tmp_path / "empty")


def test_a_damaged_trainer_state_is_named_with_its_file(tmp_path):
    good = _checkpoint(tmp_path / "checkpoint-1")
    assert load_state(good)["step"] == 0
    unreadable = tmp_path / "checkpoint-2"
    unreadable.mkdir()
    (unreadable / STATE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(RLTuneError, match=f"(?s)cannot read {unreadable / STATE_FILE}: .*pick another checkpoint"):
        load_state(unreadable)
    partial = _checkpoint(tmp_path / "checkpoint-3", {"step": 3, "rng": [{}]})
    with pytest.raises(RLTuneError, match=f"{partial / STATE_FILE} is damaged: it has no optimizer, scheduler, data"):
        load_state(partial)
    for rng in ({}, [], [1]):
        folder = _checkpoint(tmp_path / f"rng-{len(str(rng))}-{type(rng).__name__}",
                             {key: rng if key == "rng" else 0 for key in STATE_KEYS})  # fmt: skip
        with pytest.raises(RLTuneError, match=f"{folder / STATE_FILE} is damaged: its RNG states are not a list"):
            load_state(folder)
