"""The environment protocol and its registry.

An episode starts from a dataset row. The model writes a turn; the engine stops it at one of the
environment's `stop` strings (or at its end token). The environment reads the turn and answers with an
observation, whose tokens are appended to the trajectory (the model's own tokens are kept exactly as
sampled), or ends the episode. `rollout.max_turns` and `rollout.max_tokens` bound the episode.

    @ENVIRONMENTS.register("echo")
    class Echo:
        stop = ["</say>"]

        def start(self, row):
            return {"said": 0}  # this episode's state

        def step(self, state, turn):
            state["said"] += 1
            return None if "<say>" not in turn else f"<heard>{turn.split('<say>')[-1]}</heard>"

Environment objects must be safe to use from several threads at once (steps of different episodes run
concurrently); keep per-episode data in the state `start` returns.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from rltune.registry import Registry


class Environment(Protocol):
    stop: list[str]
    """Strings that end a model turn so that the environment can answer (given to the engine)."""

    def start(self, row: dict[str, Any]) -> Any:
        """A new episode's state, for the dataset row its prompt came from."""

    def step(self, state: Any, turn: str) -> str | None:
        """The observation to append after the model's turn `turn` (its text, stop string included), or
        None: the episode ends with this turn."""

    def stats(self, state: Any) -> dict[str, float]:
        """Per-episode counters for the logs (e.g. tool_calls, tool_errors); averaged over samples."""


# Optional: `tools`, a list of JSON schemas (transformers' get_json_schema) that the chat template writes into
# every prompt, as trl's `tools=` does; and a `tokenizer` argument, given the policy's tokenizer.


ENVIRONMENTS: Registry = Registry(
    "environment", builtin_modules=("rltune.environments.python_tool", "rltune.environments.tool_calling")
)


def build_environment(name: str, tokenizer: Any = None, **kwargs: Any) -> Environment:
    """An environment by registered name ('python_tool', 'tool_calling') or import path, built with `kwargs`;
    one that takes a `tokenizer` argument (to write with the chat template) gets the policy's."""
    cls = ENVIRONMENTS.get(name)
    if tokenizer is not None and "tokenizer" in inspect.signature(cls).parameters:
        kwargs = {**kwargs, "tokenizer": tokenizer}
    return cls(**kwargs)
