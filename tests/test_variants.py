"""The second variant of each feature: not only the mode the shipped recipes use.

Other joiners between boxed values and the hedge gap at its limit, other diversity judges, a lock held by
another host, an export of a checkpoint that is not the last.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from test_trainer import recipe
from transformers import AutoModelForCausalLM

from conftest import run_rltune
from rltune.checkpoint import OutputLock
from rltune.errors import RLTuneError
from rltune.eval.grading import grade
from rltune.trainer import Trainer

# --- the grader: every joiner of a listed answer, and the hedge gap at 16 characters -------------------


@pytest.mark.parametrize(
    "joiner", [", ", ",", " and ", ", and ", "; ", "$, $", " & ", " \\text{and} ", " \\text{ and } "]
)
def test_each_list_joiner_lists_the_values(joiner):
    response = f"The solutions are \\boxed{{2}}{joiner}\\boxed{{3}}"
    assert grade(response, "2, 3")
    assert not grade(response, "3")  # two values close together against one: a hedge, wrong


@pytest.mark.parametrize("joiner", [" or ", " then ", " but maybe "])
def test_other_words_between_boxes_do_not_list_them(joiner):
    assert not grade(f"\\boxed{{2}}{joiner}\\boxed{{3}}", "2, 3")


def test_the_hedge_gap_is_sixteen_characters():
    assert not grade("\\boxed{1}" + "x" * 16 + "\\boxed{2}", "2")  # offered side by side: a hedge
    assert grade("\\boxed{1}" + "x" * 17 + "\\boxed{2}", "2")  # far enough apart: the last box is the answer
    assert grade("\\boxed{2}" + "x" * 3 + "\\boxed{2}", "2")  # the same value twice is no hedge


# --- diversity: every judge floors a collapsed group at the default 0.1 --------------------------------


@pytest.mark.parametrize("judge", ["ngram", "answer", "embedding"])
def test_every_judge_floors_a_collapsed_group_at_the_default(judge):
    from rltune.rewards.diversity_partition import DiversityPartition

    reward = DiversityPartition(judge=judge)
    same = ["the answer is \\boxed{4} because 2 + 2 = 4"] * 4
    diversity, partitions = reward.diversity(same)
    assert diversity == pytest.approx([0.1] * 4) and partitions == 1
    sentences = [
        "The capital of France is Paris",
        "Photosynthesis turns light into chemical energy",
        "A prime number has exactly two divisors",
        "The violin has four strings tuned in fifths",
    ]
    distinct, _ = reward.diversity([f"{text}, so \\boxed{{{i}}}" for i, text in enumerate(sentences)])
    assert min(distinct) > 0.1  # all different: over the floor


def test_a_custom_floor_applies_to_every_judge():
    from rltune.rewards.diversity_partition import DiversityPartition

    for judge in ("ngram", "answer"):
        assert DiversityPartition(judge=judge, floor=0.3).diversity(["\\boxed{1}"] * 3)[0] == pytest.approx([0.3] * 3)


# --- the output lock: held by another host, by a dead process here, by this process --------------------


def write_lock(folder, pid, host):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".lock").write_text(json.dumps({"pid": pid, "host": host}))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    write_lock(tmp_path, dead_pid(), "some-other-host")  # its pid means nothing here
    with pytest.raises(RLTuneError, match=r"in use by another run \(pid \d+ on host some-other-host\)"):
        OutputLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["host"] == "some-other-host"


def test_a_lock_of_a_dead_process_or_of_this_one_here_is_taken_over(tmp_path):
    for pid in (dead_pid(), os.getpid()):
        write_lock(tmp_path, pid, socket.gethostname())
        lock = OutputLock(tmp_path)
        lock.acquire()
        assert json.loads((tmp_path / ".lock").read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
        lock.release()
        assert not (tmp_path / ".lock").exists()


def test_a_lock_of_a_live_process_here_is_refused(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, holder.pid, socket.gethostname())
        with pytest.raises(RLTuneError, match=f"pid {holder.pid}"):
            OutputLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()


# --- export: a checkpoint that is not the last one ----------------------------------------------------


def test_exporting_an_earlier_checkpoint_exports_that_one(tmp_path, demo_assets):
    trainer = Trainer(recipe(tmp_path, *demo_assets, train={"steps": 2, "save_every": 1, "lr": 1e-2}))
    trainer.train()
    trainer.close()
    first, last = tmp_path / "run" / "checkpoint-1", tmp_path / "run" / "checkpoint-2"
    assert last.is_dir()
    out = tmp_path / "exported"
    run_rltune("export", str(first), str(out), cwd=tmp_path)
    exported = AutoModelForCausalLM.from_pretrained(out).state_dict()
    one = AutoModelForCausalLM.from_pretrained(first).state_dict()
    two = AutoModelForCausalLM.from_pretrained(last).state_dict()
    assert all(torch.equal(exported[k], one[k]) for k in one)
    assert any(not torch.equal(one[k], two[k]) for k in one)  # the steps differ, so the test can tell
    card = (out / "README.md").read_text()
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    step_one = next(m for m in metrics if m["step"] == 1)
    assert "for 1 RL steps" in card and f"{step_one['reward/total']:.4g}" in card
