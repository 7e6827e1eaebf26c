"""tool_calling: the model calls Python functions in its chat template's tool-call format (trl's `tools=`).

The functions are a trl user's tools as they are: plain functions with type hints and a Google-style
docstring, from which transformers' `get_json_schema` writes the schema the chat template shows the model.
A model turn that ends with a call (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the
Hermes/Qwen2.5 format; other delimiters by argument) runs the function in this process, like trl does; the
result (or the error) comes back as a `tool` message, written by the chat template itself: the observation
is what the template puts between the model's turn and the next assistant turn. A turn without a call ends
the episode.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Callable

from rltune.environments.base import ENVIRONMENTS
from rltune.errors import ConfigError


@ENVIRONMENTS.register("tool_calling")
class ToolCalling:
    def __init__(
        self,
        tools: list[Callable | str],
        tokenizer: Any = None,
        call_open: str = "<tool_call>",
        call_close: str = "</tool_call>",
        max_output_chars: int = 1024,
    ):
        """`tools`: functions, or their import paths ('module:function', 'file.py:function'). `tokenizer`:
        the policy's (given by rltune), whose chat template writes the tools into the prompt and the results
        into the trajectory."""
        from transformers.utils import get_json_schema

        from rltune.registry import import_object

        functions = [import_object(t, "tool") if isinstance(t, str) else t for t in tools]
        if not functions or not all(callable(f) for f in functions):
            raise ConfigError(f"tool_calling needs a list of functions (or 'module:function' paths), got {tools!r}")
        self.functions = {f.__name__: f for f in functions}
        try:
            self.tools = [get_json_schema(f) for f in functions]
        except Exception as exc:  # transformers' own message says which hint or docstring line is missing
            raise ConfigError(f"tool_calling: a tool has no usable schema: {exc}") from exc
        if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "tool_calling writes tool calls and results with the chat template; the tokenizer has none"
            )
        self.tokenizer = tokenizer
        self.call_open, self.call_close = call_open, call_close
        self.max_output_chars = max_output_chars
        self.stop = [call_close]

    def start(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"tool_calls": 0, "tool_errors": 0}

    def call_of(self, turn: str) -> str | None:
        """The JSON of the call the turn ends with, or None when it ends without one."""
        text = turn.rstrip()
        if not text.endswith(self.call_close) or self.call_open not in text:
            return None
        return text[text.rindex(self.call_open) + len(self.call_open) : -len(self.call_close)].strip()

    def run(self, payload: str) -> tuple[str, bool]:
        """The call's result as text, and whether it succeeded (a failure's text is the error, for the model)."""
        try:
            call = json.loads(payload)
            name, arguments = call["name"], call.get("arguments", {})
            if isinstance(arguments, str):  # some templates write the arguments as a JSON string
                arguments = json.loads(arguments)
            function = self.functions[name]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            names = ", ".join(self.functions)
            return f"Error: not a call of one of the tools ({names}): {type(exc).__name__}: {exc}", False
        try:
            inspect.signature(function).bind(**arguments)
            result = function(**arguments)
        except Exception as exc:
            return f"Error: {name} raised {type(exc).__name__}: {exc}", False
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        return text[: self.max_output_chars], True

    def step(self, state: dict[str, Any], turn: str) -> str | None:
        payload = self.call_of(turn)
        if payload is None:
            return None
        state["tool_calls"] += 1
        result, ok = self.run(payload)
        state["tool_errors"] += not ok
        return self.observation(turn, result)

    def observation(self, turn: str, result: str) -> str:
        """What the chat template writes after the assistant's `turn` for a tool message with `result`, up to
        the next assistant turn's opening."""
        if self.tokenizer is None:
            raise ConfigError("tool_calling needs the tokenizer (rltune passes the policy's)")
        marker = "\x00turn\x00"  # the turn's place in the rendering, found without guessing the template
        messages = [
            {"role": "user", "content": "-"},
            {"role": "assistant", "content": marker},
            {"role": "tool", "content": result},
        ]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return rendered[rendered.index(marker) + len(marker) :]

    def stats(self, state: dict[str, Any]) -> dict[str, float]:
        return {k: float(state[k]) for k in ("tool_calls", "tool_errors")}
