"""python_tool: the model writes Python between delimiters, the code runs in the sandbox, and its output
comes back between output delimiters (tool-integrated reasoning, as in Qwen2.5-Math's TIR mode)."""

from __future__ import annotations

from typing import Any

from rltune.environments.base import ENVIRONMENTS
from rltune.sandbox import SandboxLimits, ToolResult, run_python


@ENVIRONMENTS.register("python_tool")
class PythonTool:
    """Each model turn that ends with a closed code block runs it; a turn without one ends the episode.

    The observation is `output_open + output + output_close`. Each call runs alone, in a new process:
    variables do not carry over between calls."""

    def __init__(
        self,
        code_open: str = "```python\n",
        code_close: str = "```",
        output_open: str = "\n```output\n",
        output_close: str = "\n```\n",
        timeout_s: float = 5.0,
        cpu_s: int = 5,
        memory_mb: int = 1024,
        max_output_chars: int = 512,
        executor: Any = None,
    ):
        """`executor`: a function (code, SandboxLimits) -> ToolResult used instead of the local sandbox,
        for example one that sends the code to a remote service."""
        self.code_open, self.code_close = code_open, code_close
        self.output_open, self.output_close = output_open, output_close
        self.limits = SandboxLimits(
            timeout_s=timeout_s, cpu_s=cpu_s, memory_mb=memory_mb, max_output_chars=max_output_chars
        )
        self.executor = executor or run_python
        self.stop = [code_close]

    def start(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": 0, "tool_errors": 0, "tool_timeouts": 0}

    def code_of(self, turn: str) -> str | None:
        """The code block the turn ends with, or None when it does not end with a closed one."""
        if not turn.rstrip().endswith(self.code_close.strip()):
            return None
        body = turn.rstrip()[: -len(self.code_close.strip())]
        start = body.rfind(self.code_open)
        return None if start < 0 else body[start + len(self.code_open) :]

    def step(self, state: dict[str, Any], turn: str) -> str | None:
        code = self.code_of(turn)
        if code is None:
            return None
        state["tool_calls"] += 1
        result: ToolResult = self.executor(code, self.limits)
        state["tool_errors"] += not result.ok
        state["tool_timeouts"] += result.timed_out
        return f"{self.output_open}{result.output.rstrip()}{self.output_close}"

    def stats(self, state: dict[str, Any]) -> dict[str, float]:
        return {k: float(state[k]) for k in ("tool_calls", "tool_errors", "tool_timeouts")}
