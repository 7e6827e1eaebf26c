import json

import datasets
import pytest

from rltune.config import DataConfig
from rltune.data import PromptSource
from rltune.demo import build_tokenizer
from rltune.errors import RLTuneError
from rltune.models import load_tokenizer


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(json.dumps({"q": f"{i}+1=", "sol": f"work #### {i + 1}", "id": i}) + "\n" for i in range(10))
    )
    return path


def test_local_jsonl_columns_instruction_and_gold(rows_file):
    cfg = DataConfig(
        path=str(rows_file),
        question_column="q",
        answer_column="sol",
        answer_after="####",
        instruction="{id} {question}",
        use_chat_template=False,
        shuffle=False,
    )
    source = PromptSource(cfg, build_tokenizer())
    ids, rows = source.next_batch(3)
    assert [r["prompt"] for r in rows] == ["0 0+1=", "1 1+1=", "2 2+1="]
    assert [r["gold"] for r in rows] == ["1", "2", "3"]
    assert build_tokenizer().decode(ids[1]) == "1 1+1="


def test_missing_column_is_a_clear_error(rows_file):
    with pytest.raises(
        RLTuneError, match=r"no column 'question' \(data.question_column\); its columns are: q, sol, id"
    ):
        PromptSource(DataConfig(path=str(rows_file), answer_column="sol"), build_tokenizer())


def test_bad_instruction_placeholder(rows_file):
    cfg = DataConfig(path=str(rows_file), question_column="q", answer_column="sol", instruction="{problem}")
    with pytest.raises(RLTuneError, match="cannot be filled"):
        PromptSource(cfg, build_tokenizer())


def test_unreadable_path():
    with pytest.raises(RLTuneError, match="cannot load dataset"):
        PromptSource(DataConfig(path="/nonexistent/dir/x"), build_tokenizer())


def test_chat_template_is_applied(rows_file, tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    cfg = DataConfig(
        path=str(rows_file),
        question_column="q",
        answer_column="sol",
        instruction="{question}",
        system_prompt="S",
        shuffle=False,
    )
    _, rows = PromptSource(cfg, tokenizer).next_batch(1)
    assert rows[0]["prompt"] == "<system>S<user>0+1=<assistant>"


def test_shuffled_epochs_and_resume_position(rows_file):
    cfg = DataConfig(path=str(rows_file), question_column="q", answer_column="sol", use_chat_template=False)
    a = PromptSource(cfg, build_tokenizer(), seed=3)
    first = [r["id"] for r in a.next_batch(7)[1]]
    state = a.state_dict()
    rest = [r["id"] for r in a.next_batch(8)[1]]
    assert sorted(first + rest[:3]) == list(range(10))  # one full epoch, then the next begins
    assert (state["epoch"], a.state_dict()["epoch"]) == (0, 1)  # counted from 0: one pass done, the second begun
    assert rest[3:] != sorted(rest[3:])  # each epoch shuffled anew
    b = PromptSource(cfg, build_tokenizer(), seed=3)
    b.load_state_dict(state)
    assert [r["id"] for r in b.next_batch(8)[1]] == rest


def test_in_memory_dataset_and_limit():
    ds = datasets.Dataset.from_list([{"question": "1+1=", "answer": "2"}] * 5)
    source = PromptSource(DataConfig(path="mem", limit=2, use_chat_template=False), build_tokenizer(), dataset=ds)
    assert len(source.rows) == 2


def test_long_prompts_are_skipped_with_a_count_or_fail_naming_the_row(caplog):
    ds = datasets.Dataset.from_list([{"question": q, "answer": "2"} for q in ("1+1=", "11+1=", "111+1=")])
    base = dict(path="mem", instruction="{question}", use_chat_template=False, shuffle=False)
    source = PromptSource(DataConfig(**base), build_tokenizer(), dataset=ds, context_limit=5)
    assert [r["question"] for r in source.rows] == ["1+1=", "11+1="]
    assert "skipped 1 prompts longer than 5 tokens (the rollout engine's context" in caplog.text
    with pytest.raises(
        RLTuneError, match=r"row 1: its prompt has 5 tokens, over the limit of 4 \(data.max_prompt_tokens\)"
    ):
        PromptSource(DataConfig(**base, max_prompt_tokens=4, long_prompts="fail"), build_tokenizer(), dataset=ds)


def test_null_or_empty_answers_fail_naming_the_row_or_are_skipped_and_counted(tmp_path, caplog):
    """A null answer used to become the gold "None", which `\\boxed{None}` then matched."""
    path = tmp_path / "golds.jsonl"
    lines = [
        {"question": "1+1=", "answer": "2"},
        {"question": "2+2=", "answer": None},
        {"question": "3+3=", "answer": " "},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    base = dict(path=str(path), instruction="{question}", use_chat_template=False, shuffle=False)
    with pytest.raises(RLTuneError, match=r"golds.jsonl' row 1 \(0-based\): its answer \('answer'\) is null; fix"):
        PromptSource(DataConfig(**base), build_tokenizer())
    source = PromptSource(DataConfig(**base, missing_answers="skip"), build_tokenizer())
    assert [r["gold"] for r in source.rows] == ["2"]
    assert "skipped 2 rows" in caplog.text
    gsm8k_style = tmp_path / "gsm8k.jsonl"
    gsm8k_style.write_text(json.dumps({"question": "q", "answer": "work but no final line ####"}) + "\n")
    with pytest.raises(RLTuneError, match="row 0 .* is empty"):
        PromptSource(DataConfig(path=str(gsm8k_style), answer_after="####", use_chat_template=False), build_tokenizer())


def test_a_missing_gold_is_never_matched():
    from rltune.eval.grading import grade

    assert grade(r"\boxed{None}", "None") is False
    assert grade(r"\boxed{}", "") is False
    assert grade(r"\boxed{0}", None) is False


class RecordingTokenizer:
    """The demo tokenizer, noting the longest text it was asked to tokenize."""

    def __init__(self):
        self.inner, self.longest = build_tokenizer(), 0

    def __call__(self, text, **kwargs):
        self.longest = max(self.longest, len(text))
        return self.inner(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_50_mb_question_is_dropped_before_it_is_tokenized(tmp_path, caplog):
    path = tmp_path / "huge.jsonl"
    with path.open("w") as f:
        f.write(json.dumps({"question": "1+1=", "answer": "2"}) + "\n")
        f.write(json.dumps({"question": "9" * 50_000_000 + "+1=", "answer": "1"}) + "\n")
        f.write(json.dumps({"question": "2+2=", "answer": "4"}) + "\n")
    base = dict(path=str(path), instruction="{question}", use_chat_template=False, shuffle=False)
    tokenizer = RecordingTokenizer()
    source = PromptSource(DataConfig(**base), tokenizer, context_limit=64)
    assert [r["question"] for r in source.rows] == ["1+1=", "2+2="] and tokenizer.longest < 100
    assert "skipped 1 prompts longer than 64 tokens" in caplog.text
    with pytest.raises(RLTuneError, match=r"row 1: its question has 50000003 characters, more than the limit of 64"):
        PromptSource(DataConfig(**base, long_prompts="fail"), tokenizer, context_limit=64)


def test_encoding_problems_and_duplicate_keys_are_named_by_file_and_line(tmp_path):
    from rltune.data import load_rows

    good = json.dumps({"question": "1+1=", "answer": "2"}) + "\n"
    cases = {
        "utf16.jsonl": ((good * 2).encode("utf-16"), r"line 1: UTF-16 text"),
        "latin1.jsonl": ((good + '{"question": "café?", "answer": "1"}\n').encode("latin-1"),
                         r"line 2: byte 0xe9 at column 18 is not UTF-8 \(is the file latin-1"),
        "dupes.jsonl": ((good + '{"question": "a", "answer": "1", "answer": "2"}\n').encode(),
                        r"line 2: the key 'answer' appears twice; keep one"),
    }  # fmt: skip
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(RLTuneError, match=rf"{tmp_path / name} {message}"):
            load_rows(str(tmp_path / name))
    (tmp_path / "bom.jsonl").write_bytes(("\ufeff" + good).encode())  # a UTF-8 byte-order mark is fine
    assert load_rows(str(tmp_path / "bom.jsonl"))[0]["answer"] == "2"


def test_a_data_folder_of_csv_or_json_files_loads_and_a_broken_jsonl_line_there_is_named(tmp_path):
    from rltune.data import load_rows

    csv_folder, json_folder, jsonl_folder = (tmp_path / name for name in ("csv", "json", "jsonl"))
    for folder in (csv_folder, json_folder, jsonl_folder):
        folder.mkdir()
    (csv_folder / "train.csv").write_text("question,answer\n1+1=,2\n2+2=,4\n")
    (json_folder / "train.json").write_text(json.dumps([{"question": "1+1=", "answer": "2"}]))
    assert [r["answer"] for r in load_rows(str(csv_folder))] == [2, 4]
    assert [r["question"] for r in load_rows(str(json_folder))] == ["1+1="]
    (jsonl_folder / "train-0.jsonl").write_text('{"question": "1+1=", "answer": "2"}\n')
    (jsonl_folder / "train-1.jsonl").write_text('{"question": "2+2=", "answer": "4"}\n{"question": 3+\n')
    with pytest.raises(RLTuneError, match=r"train-1\.jsonl.*line 2"):
        load_rows(str(jsonl_folder))
