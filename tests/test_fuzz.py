"""Property-based tests: answer extraction and grading never raise, and the recipe loader only ever
answers with a config or a ConfigError."""

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rltune.config import load_recipe
from rltune.errors import ConfigError
from rltune.eval.grading import extract_boxed, grade, is_hedged, normalize_answer
from rltune.eval.runner import equivalent

LATEXISH = st.text(alphabet=list("0123456789+-*/^_=(){}[],.$ \\abcdefxyzboxedfracsqrtthink</>%\n"), max_size=80)
PLAIN = st.text(alphabet=list("0123456789+-*/^=(),. abcxyz"), min_size=1, max_size=20)


@given(LATEXISH)
@settings(max_examples=400)
def test_extraction_never_raises(text):
    extract_boxed(text)
    is_hedged(text)
    normalize_answer(text)


@given(PLAIN)
@settings(max_examples=200)
def test_a_boxed_answer_is_extracted_as_written(answer):
    assert extract_boxed(f"so the answer is \\boxed{{{answer}}}.") == answer.strip()


@given(LATEXISH, PLAIN)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_grade_returns_a_bool_for_any_text(response, gold):
    assert grade(response, gold) in (True, False)


@given(st.integers(-10_000, 10_000), st.integers(-10_000, 10_000))
@settings(max_examples=40, deadline=None)
def test_integer_answers_grade_exactly_and_symmetrically(a, b):
    assert grade(f"\\boxed{{{a}}}", str(a)) is True
    assert grade(f"\\boxed{{{a}}}", str(b)) is (a == b)
    assert equivalent(str(a), str(b)) == equivalent(str(b), str(a))


SECTIONS = ["model", "data", "rollout", "rewards", "algorithm", "train", "eval", "modle", "trian"]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
RECIPES = st.dictionaries(
    st.sampled_from(SECTIONS),
    st.dictionaries(
        st.sampled_from(["path", "steps", "lr", "group_size", "name", "engine", "clip_high", "x"]), VALUES, max_size=3
    )
    | VALUES,
    max_size=5,
)


@given(RECIPES)
@settings(max_examples=300, deadline=None)
def test_recipe_loader_answers_with_a_config_or_a_config_error(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_text(yaml.safe_dump(raw))
        try:
            load_recipe(path)
        except ConfigError as exc:
            assert str(path) in str(exc) or "recipe file" in str(exc)
