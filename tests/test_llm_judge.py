"""The llm_judge reward's parts that need no served model: reading verdicts, the API key, retries against an
endpoint that is not there (asking a real `vllm serve`: test_vllm_server.py)."""

import time

import pytest
import requests

from conftest import free_port
from rltune.rewards.llm_judge import LLMJudge


def judge(**kwargs) -> LLMJudge:
    return LLMJudge(base_url=f"http://127.0.0.1:{free_port()}/v1", model="judge", **kwargs)


def test_a_verdict_is_read_from_the_reply_and_scored():
    plain = judge()
    assert plain.verdict("I think YES, it is right.") == 1.0 and plain.verdict("no.") == 0.0
    with pytest.raises(ValueError, match="has no verdict matching"):
        plain.verdict("I am not sure")
    graded = judge(verdict_pattern=r"GRADE: (\w+)", scores={"A": 1.0, "B": 0.5, "C": 0.0})
    assert graded.verdict("GRADE: b") == 0.5
    with pytest.raises(ValueError, match=r"the judge's verdict 'D' is not one of \['a', 'b', 'c'\]"):
        graded.verdict("GRADE: D")
    numeric = judge(verdict_pattern=r"score (\d+(?:\.\d+)?)", scores={})
    assert numeric.verdict("final score 7.5 of 10") == 7.5


def test_the_api_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("RLTUNE_TEST_JUDGE_KEY", "sk-test-123")
    assert judge(api_key_env="RLTUNE_TEST_JUDGE_KEY").session.headers["Authorization"] == "Bearer sk-test-123"
    assert "Authorization" not in judge().session.headers
    monkeypatch.delenv("RLTUNE_TEST_JUDGE_KEY")
    with pytest.raises(ValueError, match="api_key_env names RLTUNE_TEST_JUDGE_KEY, which is not set"):
        judge(api_key_env="RLTUNE_TEST_JUDGE_KEY")


def test_an_unreachable_endpoint_is_retried_with_backoff_then_raises():
    unreachable = judge(retries=2, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(requests.ConnectionError):
        unreachable.ask("Is 2+2=4?")
    assert unreachable.requests_sent == 3  # the first try and two retries
    assert time.monotonic() - started >= 0.5 + 1.0  # waits of 0.5 s and 1 s between them
