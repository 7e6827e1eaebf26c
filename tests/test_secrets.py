"""A value read from `${env:NAME}` never appears in what rltune prints or logs: runs that fail in each way
(a missing model path, an unknown plug-in, a server URL with credentials) and one that succeeds, their whole
output scanned for the secret."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, run_rltune
from rltune import secrets
from rltune.errors import RLTuneError


def recipe_file(tmp_path, model_dir, data_file, **sections) -> str:
    recipe = yaml.safe_load((REPO / "recipes/demo_cpu.yaml").read_text())
    recipe["model"]["path"], recipe["data"]["path"] = str(model_dir), str(data_file)
    recipe["rollout"] = {"engine": "hf", "group_size": 2, "max_tokens": 4}
    recipe["train"].update(steps=1, prompts_per_step=2, output_dir=str(tmp_path / "run"), report_to=[],
                           progress_bar=False)  # fmt: skip
    for section, values in sections.items():
        if isinstance(values, dict):
            recipe.setdefault(section, {}).update(values)
        else:
            recipe[section] = values
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


CASES = {
    "missing model path": ({"model": {"path": "${env:RLTUNE_SECRET}"}}, "/nowhere/s3cr3t-model", "does not exist"),
    "unknown plug-in": ({"rewards": [{"name": "${env:RLTUNE_SECRET}"}]}, "s3cr3t_reward", "reward"),
    "server with credentials": (
        {"rollout": {"engine": "vllm_server", "server": {"url": "${env:RLTUNE_SECRET}", "connect_timeout_s": 1}}},
        "http://user:s3cr3t-pw@127.0.0.1:9",
        "vLLM server",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failing_run_never_shows_the_secret(tmp_path, tiny_model_dir, arithmetic_file, monkeypatch, case):
    sections, secret, said = CASES[case]
    monkeypatch.setenv("RLTUNE_SECRET", secret)
    proc = run_rltune("train", recipe_file(tmp_path, tiny_model_dir, arithmetic_file, **sections), cwd=tmp_path,
                      ok=False)  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and said in output
    assert "s3cr3t" not in output and "${env:RLTUNE_SECRET}" in output


def test_a_run_with_its_output_folder_from_a_placeholder_never_shows_it(tmp_path, tiny_model_dir, arithmetic_file,
                                                                          monkeypatch):  # fmt: skip
    monkeypatch.setenv("RLTUNE_SECRET", str(tmp_path / "s3cr3t-out"))
    recipe = recipe_file(tmp_path, tiny_model_dir, arithmetic_file, train={"output_dir": "${env:RLTUNE_SECRET}"})
    proc = run_rltune("train", recipe, "--verbose", cwd=tmp_path)
    assert (tmp_path / "s3cr3t-out" / "checkpoint-1").is_dir()
    assert "s3cr3t" not in proc.stdout + proc.stderr


def test_logs_warnings_and_errors_are_redacted_in_process(caplog, capsys):
    secrets.register("RLTUNE_TEST_KEY", "sk-live-0123456789")
    logging.getLogger("some.library").warning("connecting with key %s", "sk-live-0123456789")
    assert "sk-live" not in caplog.text and "connecting with key ${env:RLTUNE_TEST_KEY}" in caplog.text
    assert str(RLTuneError("bad key sk-live-0123456789")) == "bad key ${env:RLTUNE_TEST_KEY}"
    secrets.register("RLTUNE_SHORT", "1")  # too short to be told from ordinary text
    assert secrets.redact("1 + 1") == "1 + 1"


def test_warnings_and_uncaught_tracebacks_are_redacted():
    code = (
        "import warnings; from rltune import secrets; secrets.register('RLTUNE_TEST_KEY', 'sk-live-0123456789'); "
        "warnings.warn('token sk-live-0123456789 rejected'); raise ValueError('bad key sk-live-0123456789')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "sk-live" not in proc.stderr
    assert "token ${env:RLTUNE_TEST_KEY} rejected" in proc.stderr
    assert "ValueError: bad key ${env:RLTUNE_TEST_KEY}" in proc.stderr
