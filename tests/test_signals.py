"""SIGINT/SIGTERM handling on a small script (the training runs that checkpoint on a signal are in
test_reliability.py): a signal delivered twice by a wrapper is one request; a real second one stops at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

SCRIPT = """
import time
from rltune.signals import GracefulStop

with GracefulStop(grace_s=30) as stop:
    print("ready", flush=True)
    while not stop.requested:
        time.sleep(0.01)
    time.sleep(1.5)  # the step in progress finishing
    print("stopped cleanly", flush=True)
"""


def run_script(*wrapper: str) -> subprocess.Popen:
    proc = subprocess.Popen([*wrapper, sys.executable, "-c", SCRIPT], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline() == "ready\n"
    return proc


@pytest.mark.parametrize("gap_s", [0.0, 0.05, 0.3])
def test_a_signal_delivered_twice_at_once_is_one_request(gap_s):
    proc = run_script()
    proc.send_signal(signal.SIGTERM)
    time.sleep(gap_s)
    proc.send_signal(signal.SIGTERM)  # a launcher forwarding its group's copy
    out, err = proc.communicate(timeout=60)
    assert "stopped cleanly" in out and "exiting without a checkpoint" not in err


def test_a_second_signal_later_stops_at_once():
    proc = run_script()
    proc.send_signal(signal.SIGINT)
    time.sleep(1.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT and "stopped cleanly" not in out
    assert "SIGINT again: exiting without a checkpoint" in err


def test_timeout_as_the_wrapper_stops_the_run_cleanly():
    proc = run_script("timeout", "-s", "TERM", "1")
    out, err = proc.communicate(timeout=60)
    assert "stopped cleanly" in out and "exiting without a checkpoint" not in err
