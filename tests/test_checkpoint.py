"""Which checkpoint a resume picks, how a damaged trainer state is named, and the output folder's lock under
contention (without a training run: the resume paths through the trainer are in test_reliability.py)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys

import pytest
import torch

from rltune.checkpoint import STATE_FILE, STATE_KEYS, OutputLock, list_checkpoints, load_state, resolve_checkpoint
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


def test_a_damaged_trainer_state_is_named_with_its_file(tmp_path, caplog):
    good = _checkpoint(tmp_path / "checkpoint-1")
    assert load_state(good)["step"] == 0
    assert f"{good}: not verified: no manifest.json" in caplog.text  # deleted, or an older rltune's
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


def _contend(folder, start, results, done):
    start.wait()
    try:
        OutputLock(folder).acquire()
    except RLTuneError:
        results.put(False)
        return
    results.put(True)
    done.wait(60)  # hold the lock until every contender has tried


def test_of_many_processes_taking_the_lock_at_once_exactly_one_gets_it(tmp_path):
    """Sixteen processes call acquire at the same moment, twenty times, with a stale lock present half the
    time: each time exactly one holds the lock."""
    import multiprocessing

    context = multiprocessing.get_context("fork")  # the test process has torch imported: forks start at once
    contenders = 16
    for trial in range(20):
        folder = tmp_path / f"run-{trial}"
        if trial % 2:
            folder.mkdir()
            (folder / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
        start, results, done = context.Barrier(contenders), context.Queue(), context.Event()
        procs = [context.Process(target=_contend, args=(folder, start, results, done)) for _ in range(contenders)]
        for proc in procs:
            proc.start()
        won = [results.get(timeout=60) for _ in procs]
        done.set()
        for proc in procs:
            proc.join(timeout=60)
        assert won.count(True) == 1, f"trial {trial}: {won.count(True)} processes took the lock"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def small_disk(tmp_path):
    """A 1.5 MB tmpfs: room for the tiny model's weights, not for its trainer state too (skipped where
    mounting is not allowed)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(folder)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield folder
    subprocess.run(["umount", "--lazy", str(folder)], check=True)  # lazy: a failed save may still hold a file


@pytest.mark.parametrize("state_size", [100_000, 1_000_000], ids=["state-write-fails", "weights-write-fails"])
def test_a_full_disk_while_saving_says_so_and_leaves_no_partial_checkpoint(small_disk, state_size):
    from rltune.checkpoint import save_checkpoint
    from rltune.demo import build_tiny_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_tiny_model(len(tokenizer), hidden=128 if state_size < 1_000_000 else 256)
    state = {"step": 1, "optimizer": {"m": torch.zeros(state_size)}, "scheduler": {}, "data": {}, "rng": [{}]}
    with pytest.raises(
        RLTuneError, match=r"no space left on the device of .* while writing checkpoint-1: .* GB free"
    ) as err:
        save_checkpoint(small_disk / "run", 1, model, tokenizer, state, "recipe", keep=2)
    # the size it names: three times the weights (weights and two optimizer moments), in GB
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert f"needs about {3 * weights / 1e9:.2f} GB" in str(err.value)
    assert list((small_disk / "run").iterdir()) == []


def test_a_full_disk_while_taking_the_lock_is_one_line_and_leaves_no_empty_lock(small_disk):
    (small_disk / "run").mkdir()
    with (small_disk / "filler").open("wb", buffering=0) as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    with pytest.raises(RLTuneError, match=r"cannot write .*\.lock: No space left on device \(0\.0 MB free there\)"):
        OutputLock(small_disk / "run").acquire()
    assert not (small_disk / "run" / ".lock").exists()


def test_a_save_killed_halfway_leaves_nothing_in_the_way_of_the_next(tmp_path, tiny_model_dir, caplog):
    """A `.checkpoint-N.tmp` left by a killed save is cleared; the save completes and says where it is."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rltune.checkpoint import save_checkpoint

    stale = tmp_path / "run" / ".checkpoint-1.tmp"
    stale.mkdir(parents=True)
    (stale / "half-written.bin").write_bytes(b"\0" * 10)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    state = {"step": 1, "optimizer": {}, "scheduler": {}, "data": {}, "rng": [{}]}
    with caplog.at_level(logging.INFO, logger="rltune"):
        final = save_checkpoint(tmp_path / "run", 1, model, tokenizer, state, "model: {path: tiny}\n", keep=2)
    assert final.name == "checkpoint-1" and not (final / "half-written.bin").exists() and not stale.exists()
    assert f"saved {final}" in [r.getMessage() for r in caplog.records]


def test_taking_and_releasing_the_output_lock_leaks_no_file_descriptor(tmp_path):
    import os

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_descriptors()
    for _ in range(50):
        lock = OutputLock(tmp_path / "run")
        lock.acquire()
        lock.release()
    assert open_descriptors() == before
