"""An LLM as the judge behind an OpenAI-compatible endpoint: a prompt template, a verdict parser,
concurrency, timeouts, retries and a cache."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from typing import Any

from rltune.rewards import REWARDS, Completion

DEFAULT_TEMPLATE = (
    "Question:\n{question}\n\nReference answer:\n{gold}\n\nResponse:\n{completion}\n\n"
    "Is the response correct? Answer YES or NO.\nVerdict:"
)


@REWARDS.register("llm_judge")
class LLMJudge:
    """An LLM as the judge: each completion goes, filled into `template` ({question}, {completion}, {gold}
    and the row's columns), to an OpenAI-compatible endpoint (`vllm serve`, an API); the first match of
    `verdict_pattern` in its answer is the verdict, scored through `scores` (or read as a number when
    `scores` is empty). Requests run `max_concurrency` at a time with `timeout_s` each and `retries`
    retries; verdicts are cached by prompt. A reply with no verdict raises (counted in reward/errors)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        template: str = DEFAULT_TEMPLATE,
        verdict_pattern: str = r"\b(YES|NO)\b",
        scores: dict[str, float] | None = None,
        endpoint: str = "chat",
        api_key_env: str | None = None,
        max_tokens: int = 16,
        temperature: float = 0.0,
        max_concurrency: int = 8,
        timeout_s: float = 30.0,
        retries: int = 2,
    ):
        import requests

        if endpoint not in ("chat", "completions"):
            raise ValueError(f"endpoint must be 'chat' or 'completions', not {endpoint!r}")
        self.url = base_url.rstrip("/") + ("/chat/completions" if endpoint == "chat" else "/completions")
        self.model, self.template, self.endpoint = model, template, endpoint
        self.pattern = re.compile(verdict_pattern, re.IGNORECASE)
        self.scores = {k.lower(): float(v) for k, v in (scores if scores is not None else {"yes": 1, "no": 0}).items()}
        self.max_tokens, self.temperature = max_tokens, temperature
        self.timeout_s, self.retries = timeout_s, retries
        self.session = requests.Session()
        if api_key_env:  # the key stays in the environment, never in the recipe
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"api_key_env names {api_key_env}, which is not set in the environment")
            self.session.headers["Authorization"] = f"Bearer {key}"
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self.cache: dict[str, str] = {}
        self.lock = threading.Lock()
        self.requests_sent = 0

    def prompt(self, completion: Completion, row: dict) -> str:
        fields = {**row, "question": row.get("question", row.get("prompt", "")), "gold": row.get("gold", "")}
        return self.template.format(**{**fields, "completion": completion.text})

    def ask(self, prompt: str) -> str:
        """The judge's reply to `prompt`, from the cache or the endpoint (retried on errors and timeouts)."""
        with self.lock:
            if prompt in self.cache:
                return self.cache[prompt]
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        for attempt in range(self.retries + 1):
            try:
                with self.slots:
                    self.requests_sent += 1
                    response = self.session.post(self.url, data=json.dumps(body), timeout=self.timeout_s,
                                                 headers={"Content-Type": "application/json"})  # fmt: skip
                response.raise_for_status()
                choice = response.json()["choices"][0]
                reply = choice["message"]["content"] if self.endpoint == "chat" else choice["text"]
                break
            except Exception:
                if attempt == self.retries:
                    raise
                time.sleep(0.5 * 2**attempt)
        with self.lock:
            self.cache[prompt] = reply
        return reply

    def verdict(self, reply: str) -> float:
        found = self.pattern.search(reply)
        if found is None:
            raise ValueError(f"the judge's reply has no verdict matching {self.pattern.pattern!r}: {reply[:200]!r}")
        text = found.group(1) if found.groups() else found.group(0)
        if not self.scores:
            return float(text)
        if text.lower() not in self.scores:
            raise ValueError(f"the judge's verdict {text!r} is not one of {sorted(self.scores)}")
        return self.scores[text.lower()]

    def __call__(self, completion: Completion, row: dict) -> float:
        return self.verdict(self.ask(self.prompt(completion, row)))
