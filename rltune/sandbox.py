"""Runs a model's Python code in a child process with limits: the python_tool environment's executor.

Each call gets a fresh process (`python -I`, no site folder of the user, no environment variables of the
trainer), a fresh temporary working folder removed afterwards, and these limits:

- CPU time (RLIMIT_CPU), address space (RLIMIT_AS), size of any file written (RLIMIT_FSIZE), open files,
  processes (RLIMIT_NPROC, for a non-root user), and a wall-clock timeout after which the whole process
  group is killed;
- an audit hook, installed before the code runs and not removable from Python, that refuses starting
  processes (fork, exec, subprocess, os.system), sockets, ctypes, and opening files outside the working
  folder and the Python installation (the user's home, /etc, the trainer's files);
- output (stdout and stderr together) goes to a file in the working folder, capped by RLIMIT_FSIZE, and is
  cut to `max_output_chars` for the model.

What it does not protect against (see the README): code that escapes Python's audit hooks (a bug in the
interpreter or in a C extension that opens files or sockets itself without raising audit events), reading
the Python installation's own files, and denial of service through the machine's shared resources (disk
bandwidth, the memory cap is per process). For untrusted models at scale, run the code elsewhere: an
environment's executor is one function and can send the code to a remote sandbox instead.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SandboxLimits:
    timeout_s: float = 5.0
    """Wall-clock limit of one call; past it the process group is killed."""
    cpu_s: int = 5
    """CPU-time limit (RLIMIT_CPU) in seconds."""
    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS) in MiB."""
    file_size_mb: int = 4
    """Largest file the code may write, its output included (RLIMIT_FSIZE), in MiB."""
    max_processes: int = 512
    """Process limit (RLIMIT_NPROC) of a non-root user: it counts all of the user's processes, so it only
    stops a fork bomb that the audit hook somehow let through."""
    max_output_chars: int = 1024
    """The output handed back is cut to this many characters (head and tail kept)."""


@dataclass
class ToolResult:
    output: str
    """What the code printed (stdout and stderr, in order), cut to the budget; on failure the error."""
    ok: bool
    """False when the code raised, was refused something, or hit a limit."""
    timed_out: bool = False


# Runs inside the child: installs the audit hook, then executes the code read from a file.
_RUNNER = r"""
import os, sys
root = os.path.realpath(os.getcwd())
allowed_read = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, root)})
code = open(sys.argv[1]).read()
os.unlink(sys.argv[1])

def inside(path, roots):
    try:
        real = os.path.realpath(os.fsdecode(path) if not isinstance(path, int) else "/")
    except Exception:
        return False
    return any(real == r or real.startswith(r + os.sep) for r in roots)

BLOCKED = ("os.fork", "os.forkpty", "os.posix_spawn", "os.exec", "os.system", "os.spawn", "os.kill", "os.killpg",
           "subprocess.Popen", "pty.spawn", "socket.", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
           "ctypes.set_errno", "os.chroot", "sys.addaudithook", "mmap.")

WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT
CHANGES = ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod", "os.chown",
           "os.truncate", "shutil.rmtree")

def hook(event, args):
    if event.startswith(BLOCKED):
        raise PermissionError(f"the sandbox does not allow {event}")
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int) or os.fsdecode(path) == "/dev/null":
            return
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (flags or 0) & WRITES
        if not inside(path, (root,) if writing else allowed_read):
            raise PermissionError(f"the sandbox does not allow opening {os.fsdecode(path)!r}")
    elif event in CHANGES or event in ("os.listdir", "os.scandir"):
        path = args[0]
        roots = (root,) if event in CHANGES else allowed_read
        if path is not None and not isinstance(path, int) and not inside(path, roots):
            raise PermissionError(f"the sandbox does not allow {event} on {os.fsdecode(path)!r}")

sys.addaudithook(hook)
del hook
try:
    exec(compile(code, "<tool>", "exec"), {"__name__": "__main__"})
except SystemExit:
    raise
except BaseException as error:  # the model's traceback, without this runner's frame
    import traceback
    traceback.print_exception(type(error), error, error.__traceback__.tb_next)
    sys.exit(1)
"""


def _limit(limits: SandboxLimits):
    def apply() -> None:
        os.setsid()  # its own process group: the timeout kills everything it started
        mib = 1024 * 1024
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mib, limits.memory_mb * mib))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_mb * mib, limits.file_size_mb * mib))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.getuid() != 0:  # a second guard against fork bombs (the limit counts all of the user's processes)
            resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))

    return apply


def run_python(code: str, limits: SandboxLimits | None = None) -> ToolResult:
    """Run `code` in a fresh sandboxed process and return what it printed, or its error, cut to the budget."""
    limits = limits or SandboxLimits()
    folder = Path(tempfile.mkdtemp(prefix="rltune-tool-"))
    try:
        script = folder / ".code.py"
        script.write_text(code)
        output_file = folder / ".output"
        env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
        with open(output_file, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-u", "-c", _RUNNER, str(script)],  # -u: prints and errors in order
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_limit(limits),
            )
            timed_out = False
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        printed = output_file.read_bytes()
        text = _cut(printed.decode("utf-8", errors="replace"), limits.max_output_chars)
        status = proc.returncode
        if len(printed) >= limits.file_size_mb * 1024 * 1024:  # Python ignores SIGXFSZ: its writes just fail
            return ToolResult(_append(text, f"Error: output over {limits.file_size_mb} MiB"), False)
        if timed_out:
            return ToolResult(_append(text, f"TimeoutError: the code ran past {limits.timeout_s:g}s"), False, True)
        if status < 0:
            reason = {
                signal.SIGXCPU: f"CPU time limit of {limits.cpu_s}s reached",
                signal.SIGXFSZ: f"output or file over {limits.file_size_mb} MiB",
                signal.SIGKILL: "killed (memory limit?)",
            }.get(-status, f"killed by signal {-status}")
            return ToolResult(_append(text, f"Error: {reason}"), False, -status == signal.SIGXCPU)
        return ToolResult(text, status == 0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _cut(text: str, budget: int) -> str:
    """`text`, or its head and tail with a marker between when it is over `budget` characters."""
    if len(text) <= budget:
        return text
    half = max(budget // 2 - 20, 0)
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters cut] ...\n{text[-half:] if half else ''}"


def _append(text: str, line: str) -> str:
    return f"{text.rstrip()}\n{line}".lstrip("\n")
