"""The tool sandbox's limits as the model's code meets them (the escapes it contains: test_multi_turn.py)."""

import os
import time

import pytest

from rltune.sandbox import SandboxLimits, run_python

MIB = 1024 * 1024
READ_LIMITS = (
    "import os, resource\n"
    "for name in ('CPU', 'AS', 'FSIZE', 'NOFILE', 'CORE', 'NPROC'):\n"
    "    print(name, *resource.getrlimit(getattr(resource, 'RLIMIT_' + name)))"
)


@pytest.mark.parametrize("limits", [None, SandboxLimits(cpu_s=3, memory_mb=700, file_size_mb=2, max_processes=77)])
def test_the_code_runs_under_the_limits_it_was_given_or_the_defaults(limits):
    result = run_python(READ_LIMITS, limits)
    assert result.ok and not result.timed_out, result.output
    seen = {line.split()[0]: tuple(int(v) for v in line.split()[1:]) for line in result.output.splitlines()}
    want = limits or SandboxLimits()
    assert seen["CPU"] == (want.cpu_s, want.cpu_s + 1)  # SIGXCPU at the soft limit, SIGKILL a second later
    assert seen["AS"] == (want.memory_mb * MIB,) * 2
    assert seen["FSIZE"] == (want.file_size_mb * MIB,) * 2
    assert seen["NOFILE"] == (64, 64) and seen["CORE"] == (0, 0)
    if os.getuid() != 0:  # root is not held by RLIMIT_NPROC, so the sandbox leaves it alone there
        assert seen["NPROC"] == (want.max_processes,) * 2


def test_the_code_cannot_hold_more_than_64_files_open():
    code = "files = []\nfor i in range(100):\n    files.append(open(f'f{i}', 'w'))\nprint('opened', len(files))"
    result = run_python(code, SandboxLimits(max_output_chars=4000))
    assert not result.ok and "Too many open files" in result.output and "opened" not in result.output


def test_a_call_past_its_wall_clock_returns_then_not_when_the_code_would_end():
    started = time.monotonic()
    result = run_python("import time\nprint('start', flush=True)\ntime.sleep(60)", SandboxLimits(timeout_s=2))
    elapsed = time.monotonic() - started
    assert not result.ok and result.timed_out and result.output.startswith("start")
    assert "ran past 2s" in result.output
    assert elapsed < 30, f"returned after {elapsed:.0f}s: the sleeping process was waited for, not killed"
