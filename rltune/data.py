"""Prompt data: load a dataset, format prompts, hand out batches in a resumable order."""

from __future__ import annotations

import codecs
import json
import logging
import random
from pathlib import Path
from typing import Any

from rltune.config import DataConfig
from rltune.errors import RLTuneError

log = logging.getLogger(__name__)

_FILE_TYPES = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def _check_json_lines(file: Path) -> None:
    """A .jsonl file's lines each hold one JSON object, in UTF-8, without a key twice; the first line that
    does not is named by its number (the datasets loader reports only a byte offset, a pyarrow error, or
    nothing, and keeps one of two duplicate keys silently)."""
    if file.suffix != ".jsonl":
        return

    def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        twice = next((key for key in keys if keys.count(key) > 1), None)
        if twice is not None:
            raise ValueError(f"the key {twice!r} appears twice; keep one")
        return dict(pairs)

    with file.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if (number == 1 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))) or b"\0" in raw:
                raise RLTuneError(
                    f"{file} line {number}: UTF-16 text (a byte-order mark or NUL bytes); save the file as UTF-8"
                )
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise RLTuneError(
                    f"{file} line {number}: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8 (is the "
                    "file latin-1 or another encoding?); save it as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=unique_keys)
            except json.JSONDecodeError as exc:
                raise RLTuneError(f"{file} line {number}: not valid JSON ({exc.msg}); fix or remove the line") from None
            except ValueError as exc:
                raise RLTuneError(f"{file} line {number}: {exc}") from None
            if not isinstance(record, dict):
                raise RLTuneError(f"{file} line {number}: a JSON {type(record).__name__}, not an object with columns")


def load_rows(path: str, split: str = "train", subset: str | None = None):
    """A `datasets.Dataset` from a hub name, a local data file, or a local folder of data files."""
    import datasets

    local = Path(path).expanduser()
    try:
        if local.is_file():
            if local.stat().st_size == 0:
                raise RLTuneError(f"data file {path!r} is empty")
            builder = _FILE_TYPES.get(local.suffix)
            if builder is None:
                raise RLTuneError(
                    f"data file {path!r}: unsupported type {local.suffix!r}; use {', '.join(_FILE_TYPES)}"
                )
            _check_json_lines(local)
            return datasets.load_dataset(builder, data_files=str(local), split="train")
        if local.is_dir():
            files = [p for p in sorted(local.iterdir()) if p.suffix in _FILE_TYPES]
            matching = [p for p in files if split in p.stem] or files
            if not matching:
                raise RLTuneError(f"data folder {path!r} holds no {'/'.join(_FILE_TYPES)} files")
            for file in matching:
                _check_json_lines(file)
            builder = _FILE_TYPES[matching[0].suffix]
            return datasets.load_dataset(builder, data_files=[str(p) for p in matching], split="train")
        return datasets.load_dataset(path, subset, split=split)
    except RLTuneError:
        raise
    except Exception as exc:
        raise RLTuneError(f"cannot load dataset {path!r} (split {split!r}): {exc}") from exc


class PromptSource:
    """Formatted prompts with gold answers, shuffled per epoch from a seed, position kept for resume.

    Each row handed out is the dataset row plus `prompt` (the text given to the model) and `gold`.
    """

    def __init__(
        self,
        cfg: DataConfig,
        tokenizer: Any,
        seed: int = 0,
        dataset=None,
        context_limit: int | None = None,
        tools: list[dict[str, Any]] | None = None,
    ):
        """`context_limit`: the longest prompt the rollout engine can take with room for the completion.
        `tools`: JSON schemas the chat template writes into every prompt (an environment's tools)."""
        self.cfg = cfg
        self.tools = tools
        self.tokenizer = tokenizer
        self.seed = seed
        rows = dataset if dataset is not None else load_rows(cfg.path, cfg.split, cfg.subset)
        columns = list(rows.column_names)
        self.columns = columns
        for role, column in (("question_column", cfg.question_column), ("answer_column", cfg.answer_column)):
            if column is not None and column.split(".")[0] not in columns:
                raise RLTuneError(
                    f"dataset {cfg.path!r} has no column {column!r} (data.{role}); "
                    f"its columns are: {', '.join(columns)}"
                )
        if cfg.limit is not None:
            rows = rows.select(range(min(cfg.limit, len(rows))))
        self.rows: list[dict[str, Any]] = []
        self.prompt_ids: list[list[int]] = []
        dropped = missing = 0
        limit, limit_source = cfg.max_prompt_tokens, "data.max_prompt_tokens"
        if context_limit is not None and (limit is None or context_limit < limit):
            limit, limit_source = context_limit, "the rollout engine's context minus rollout.max_tokens"
        if limit is not None and limit < 1:
            raise RLTuneError(
                f"no prompt of {cfg.path!r} can fit: {limit_source} leaves {limit} tokens for it; lower the "
                "completion length (rollout.max_tokens, or --max-tokens of rltune eval) or use a longer context"
            )
        # A token spells at most this many characters: a question longer than limit * it cannot fit, and is
        # dropped before tokenizing (a 50 MB row would take gigabytes to tokenize just to be dropped).
        max_chars = None if limit is None else limit * max(map(len, tokenizer.get_vocab()), default=1)
        for index, row in enumerate(rows):
            item = dict(row)
            question = column_value(item, cfg.question_column)
            answer = column_value(item, cfg.answer_column) if cfg.answer_column is not None else ""
            if max_chars is not None and isinstance(question, str) and len(question) > max_chars:
                if cfg.long_prompts == "fail":
                    raise RLTuneError(
                        f"dataset {cfg.path!r} row {index}: its question has {len(question)} characters, more than "
                        f"the limit of {limit} tokens ({limit_source}) can hold; shorten it or set "
                        "data.long_prompts=skip"
                    )
                dropped += 1
                continue
            gold = "" if answer is None else str(answer)
            if cfg.answer_after:
                gold = gold.rsplit(cfg.answer_after, 1)[-1].strip()
            blank = [
                (role, column, value)
                for role, column, value in (
                    ("question", cfg.question_column, question),
                    ("answer", cfg.answer_column, answer),
                )
                if (role == "question" or cfg.answer_column is not None)
                and (value is None or not str(value).strip() or (role == "answer" and not gold.strip()))
            ]
            if blank:
                role, column, value = blank[0]
                if cfg.missing_answers == "fail":
                    raise RLTuneError(
                        f"dataset {cfg.path!r} row {index} (0-based): its {role} ({column!r}) is "
                        f"{'null' if value is None else 'empty'}; fix the row or set data.missing_answers=skip"
                    )
                missing += 1
                continue
            item["gold"] = gold
            messages = conversation(question, cfg.system_prompt)
            if messages is not None:
                item["messages"] = messages
            item["prompt"] = self.format_prompt(item)
            ids = tokenizer(item["prompt"], add_special_tokens=False)["input_ids"]
            if limit is not None and len(ids) > limit:
                if cfg.long_prompts == "fail":
                    raise RLTuneError(
                        f"dataset {cfg.path!r} row {index}: its prompt has {len(ids)} tokens, over "
                        f"the limit of {limit} ({limit_source}); raise the limit or set data.long_prompts=skip"
                    )
                dropped += 1
                continue
            self.rows.append(item)
            self.prompt_ids.append(ids)
        if dropped:
            log.warning("skipped %d prompts longer than %d tokens (%s)", dropped, limit, limit_source)
        if missing:
            log.warning(
                "skipped %d rows of %r with a null or empty question or answer (data.missing_answers=skip)",
                missing,
                cfg.path,
            )
        if not self.rows:
            raise RLTuneError(f"dataset {cfg.path!r} has no usable rows (after limit/max_prompt_tokens)")
        self.epoch = 0
        self.position = 0
        self._order = self._epoch_order()

    def format_prompt(self, row: dict[str, Any]) -> str:
        if "messages" in row:  # conversational: the chat template applies to the messages as they are
            if not getattr(self.tokenizer, "chat_template", None):
                raise RLTuneError(
                    f"dataset {self.cfg.path!r} holds conversations ({self.cfg.question_column!r} is a list of "
                    "messages) and the tokenizer has no chat template to write them with; use a chat model's "
                    "tokenizer or a text column"
                )
            return self._chat(row["messages"])
        fields = dict(row)
        fields["question"] = column_value(row, self.cfg.question_column)
        try:
            text = self.cfg.instruction.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise RLTuneError(
                f"data.instruction {self.cfg.instruction!r} cannot be filled from the row: {exc!r} "
                "(use {question} or a column name; write literal braces as {{ }})"
            ) from exc
        has_template = getattr(self.tokenizer, "chat_template", None)
        if self.tools and not (self.cfg.use_chat_template and has_template):
            raise RLTuneError(
                "the environment's tools are written into the prompt by the chat template: set "
                "data.use_chat_template=true and use a tokenizer that has one"
            )
        if not (self.cfg.use_chat_template and has_template):
            return text
        messages = [{"role": "user", "content": text}]
        if self.cfg.system_prompt:
            messages.insert(0, {"role": "system", "content": self.cfg.system_prompt})
        return self._chat(messages)

    def _chat(self, messages: list[dict[str, Any]]) -> str:
        tools = {"tools": self.tools} if self.tools else {}
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **tools)

    @property
    def max_prompt_length(self) -> int:
        return max(len(ids) for ids in self.prompt_ids)

    def _epoch_order(self) -> list[int]:
        order = list(range(len(self.rows)))
        if self.cfg.shuffle:
            random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        return order

    def next_batch(self, size: int) -> tuple[list[list[int]], list[dict[str, Any]]]:
        """The next `size` prompts (token ids, rows), moving into a new shuffled epoch as needed."""
        picked: list[int] = []
        while len(picked) < size:
            if self.position >= len(self._order):
                self.epoch += 1
                self.position = 0
                self._order = self._epoch_order()
            picked.append(self._order[self.position])
            self.position += 1
        return [self.prompt_ids[i] for i in picked], [self.rows[i] for i in picked]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = state["epoch"]
        self.position = state["position"]
        self._order = self._epoch_order()


def conversation(question: Any, system_prompt: str | None) -> list[dict[str, str]] | None:
    """The messages of a conversational prompt (trl's format: a list of {"role", "content"} dicts), with
    `system_prompt` in place of its own system message; None for a text prompt."""
    if not isinstance(question, list) or not all(isinstance(m, dict) and "role" in m for m in question):
        return None
    messages = [{"role": m["role"], "content": m.get("content", "")} for m in question]
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + [m for m in messages if m["role"] != "system"]
    return messages


def column_value(row: dict[str, Any], column: str) -> Any:
    """`row[column]`, where a dotted name reaches into nested fields (verl's `reward_model.ground_truth`)."""
    if column in row or "." not in column:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            return None  # a row without it: refused or skipped as a missing value
        value = value[part]
    return value
