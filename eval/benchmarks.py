"""Math benchmarks: where each one lives, which field is the question, and how its gold is normalised.

Each benchmark loads from the hub by its usual dataset name, or from a local folder (`data_dir`)
laid out as `<data_dir>/<name>/<file>` (the layout of ../shared/benchdata). Any jsonl with a question
and an answer column is a benchmark too: `Benchmark.from_jsonl` (CLI: `path.jsonl:question:answer`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rltune.errors import RLTuneError
from rltune.eval.grading import extract_boxed

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _field(row: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in row and row[name] is not None:
            return row[name]
    raise RLTuneError(f"no value in {' or '.join(map(repr, names))} (missing or null); its fields: {sorted(row)}")


def gsm8k_gold(row: dict[str, Any]) -> str:
    """`... #### 1,234` -> `1234` (only thousands separators are removed)."""
    return _THOUSANDS.sub("", str(_field(row, "answer")).split("####")[-1].strip())


def integer_gold(row: dict[str, Any]) -> str:
    """AIME `025` -> `25`; AMC `27.0` -> `27` (non-integral values are kept as they are)."""
    value = str(_field(row, "answer")).strip()
    try:
        number = float(value)
    except ValueError:
        return value
    return str(int(number)) if number.is_integer() else value


def plain_gold(row: dict[str, Any]) -> str:
    return str(_field(row, "answer")).strip()


def _clean_latex_gold(text: str) -> str:
    """Drop stray `$` delimiters and a trailing period left inside a few golds."""
    return text.replace("$", " ").strip().rstrip(".").strip()


def minerva_gold(row: dict[str, Any]) -> str:
    """The last boxed answer of the reference solution (hub copies carry an `answer` field)."""
    if row.get("answer"):
        return str(row["answer"]).strip()
    boxed = extract_boxed(str(_field(row, "solution")))
    if boxed is None:
        raise RLTuneError(f"minerva_math row without a boxed answer in its solution: {str(row)[:200]}")
    return _clean_latex_gold(boxed)


def olympiad_gold(row: dict[str, Any]) -> str:
    """`final_answer` is a list of `$...$` strings; several answers are compared as a set."""
    answers = _field(row, "final_answer", "answer")
    if isinstance(answers, str):
        answers = [answers]
    return ", ".join(_clean_latex_gold(a) for a in answers)


def columns(*names: str) -> Callable[[dict[str, Any]], dict[str, str]]:
    """Breakdowns by the rows' own columns (MATH's level and subject), left out where a row lacks one."""
    return lambda row: {name: str(row[name]) for name in names if row.get(name) not in (None, "")}


_AIME_YEAR = re.compile(r"(?<!\d)((?:19|20)\d\d)_AIME")


def aime_year(default: str) -> Callable[[dict[str, Any]], dict[str, str]]:
    """AIME's breakdown by year: a `year` column, else the year in the problem's AoPS url, else `default` (the
    year a one-year copy is of)."""

    def groups(row: dict[str, Any]) -> dict[str, str]:
        year = row.get("year") or row.get("Year")
        found = _AIME_YEAR.search(str(row.get("url") or ""))
        return {"year": str(year or (found.group(1) if found else default))}

    return groups


DATA_SOURCE = "data_source"
"""verl's column naming a row's source: a mixed set is broken down by it, whatever the benchmark."""


@dataclass
class Benchmark:
    name: str
    question_fields: tuple[str, ...]
    gold: Callable[[dict[str, Any]], str]
    local_file: str | None = None
    """Path under data_dir."""
    hub_path: str | None = None
    hub_subset: str | None = None
    hub_split: str = "test"
    groups: Callable[[dict[str, Any]], dict[str, str]] = columns()
    """The breakdowns a row belongs to ({'level': '3', 'subject': 'Algebra'}): metrics are reported per value."""

    def question(self, row: dict[str, Any]) -> str:
        return str(_field(row, *self.question_fields))

    def load(
        self, data_dir: str | Path | None = None, limit: int | None = None, breakdowns: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Rows with `question`, `gold` and `groups` (the benchmark's breakdowns, the `data_source` column and
        the columns named in `breakdowns`, as a JSON object) added, in file order."""
        from rltune.data import load_rows

        own_file = self.local_file is not None and Path(self.local_file).is_absolute()
        if self.local_file and (data_dir is not None or own_file):
            path = Path(self.local_file) if own_file else Path(data_dir) / self.local_file
            if not path.is_file():
                raise RLTuneError(f"benchmark {self.name!r}: {path} does not exist (is --data-dir right?)")
            rows, source = load_rows(str(path)), str(path)
        elif self.hub_path:
            rows, source = load_rows(self.hub_path, self.hub_split, self.hub_subset), self.hub_path
        else:
            raise RLTuneError(f"benchmark {self.name!r} has no hub copy; give --data-dir")
        out = []
        for i, row in enumerate(rows):
            if limit is not None and i >= limit:
                break
            item = dict(row)
            try:
                item["question"], item["gold"] = self.question(row), self.gold(row)
            except RLTuneError as exc:
                raise RLTuneError(f"benchmark {self.name!r}: row {i + 1} of {source}: {exc}") from None
            # as JSON text: rows go through an Arrow table, where dicts with differing keys do not fit one type
            item["groups"] = json.dumps({**self.groups(row), **columns(DATA_SOURCE, *breakdowns)(row)})
            out.append(item)
        return out

    @classmethod
    def from_jsonl(cls, path: str, question_column: str, answer_column: str, name: str | None = None) -> Benchmark:
        def gold(row: dict[str, Any]) -> str:
            return str(_field(row, answer_column)).strip()

        file = Path(path)
        return cls(
            name=name or file.stem, question_fields=(question_column,), gold=gold, local_file=str(file.resolve())
        )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("gsm8k", ("question",), gsm8k_gold, "gsm8k/test.jsonl", "openai/gsm8k", "main"),
        Benchmark(
            "math500",
            ("problem",),
            plain_gold,
            "math500/test.jsonl",
            "HuggingFaceH4/MATH-500",
            groups=columns("level", "subject"),
        ),
        Benchmark(
            "aime24",
            ("problem", "question"),
            integer_gold,
            "aime24/test.jsonl",
            "HuggingFaceH4/aime_2024",
            hub_split="train",
            groups=aime_year("2024"),
        ),
        # The cleaned copy repairs three problems whose LaTeX escapes were corrupted (\f, \t).
        Benchmark(
            "aime25",
            ("problem", "question"),
            integer_gold,
            "aime25/test.cleaned.jsonl",
            "yentinglin/aime_2025",
            hub_split="train",
            groups=aime_year("2025"),
        ),
        Benchmark("amc23", ("problem", "question"), integer_gold, "amc23/test.jsonl", "math-ai/amc23"),
        Benchmark(
            "minerva_math",
            ("problem", "question"),
            minerva_gold,
            "minerva_math/test.jsonl",
            "math-ai/minervamath",
            groups=columns("type"),
        ),
        Benchmark(
            "olympiadbench",
            ("question", "problem"),
            olympiad_gold,
            "olympiadbench/test.jsonl",
            "Hothan/OlympiadBench",
            "OE_TO_maths_en_COMP",
            hub_split="train",
            groups=columns("subfield"),
        ),
    ]
}


def get_benchmark(spec: str) -> Benchmark:
    """A shipped benchmark by name, or `path.jsonl:question_column:answer_column`."""
    if spec in BENCHMARKS:
        return BENCHMARKS[spec]
    parts = spec.rsplit(":", 2)
    if len(parts) == 3 and parts[0].endswith((".jsonl", ".json")):
        if not Path(parts[0]).is_file():
            raise RLTuneError(f"benchmark file {parts[0]!r} does not exist")
        return Benchmark.from_jsonl(parts[0], parts[1], parts[2])
    raise RLTuneError(
        f"unknown benchmark {spec!r}: use one of {', '.join(BENCHMARKS)} or 'file.jsonl:question_column:answer_column'"
    )
