"""Loaders for local dataset files (GSM8K, MATH, MATH-500 / AIME, verl parquet) into Examples.

Every bad row is a data error naming the file and its 1-based line (or parquet row) and the field,
never a silently skipped or empty answer. Field names are matched case-insensitively ("Problem" and
"problem" both work), since AIME mirrors disagree on case.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections.abc import Iterable, Iterator
from typing import Any

from rlvr_jax.data import types

KINDS = ("gsm8k", "math", "answer", "parquet")
_BOXED = ("\\boxed", "\\fbox")
_STRIP = string.punctuation + string.whitespace
_WHITESPACE = re.compile(r"\s*")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}, or "\\boxed 5") in `text`, else None.

    Braces are matched with nesting; escaped braces (\\{ \\}) are content, not grouping. An
    unbalanced last box gives None rather than a guess.
    """
    start = max(text.rfind(cmd) for cmd in _BOXED)
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if i < len(text) and text[i] == " ":  # "\boxed 5": the argument runs to a space or '$'
        match = re.match(r" +([^\s$]+)", text[i:])
        return match.group(1) if match else None
    if i >= len(text) or text[i] != "{":
        return None
    depth, j = 0, i
    while j < len(text):
        ch = text[j]
        if ch == "\\":
            j += 2  # skip the escaped character, "\{" included
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
        j += 1
    return None


def normalize_prompt(prompt: str) -> str:
    """The dedupe key: lowercase, whitespace runs collapsed, punctuation stripped at both ends."""
    return " ".join(prompt.lower().split()).strip(_STRIP)


def dedupe(examples: Iterable[types.Example]) -> list[types.Example]:
    """The examples with the first of each normalised prompt kept, in their original order."""
    seen, out = set(), []
    for ex in examples:
        key = normalize_prompt(ex.prompt)
        if key not in seen:
            seen.add(key)
            out.append(ex)
    return out


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"dataset file not found: {path}")


def _iter_jsonl(path: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(path, 1-based line, object) for each non-blank line of a jsonl file."""
    _check_exists(path)
    with open(path, encoding="utf-8-sig") as f:  # tolerate a BOM
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {line_no}: malformed JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {line_no}: expected a JSON object")
            yield path, line_no, row


def _iter_json(path: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(path, line where the object starts, object) for a .json file: an object or a list."""
    _check_exists(path)
    with open(path, encoding="utf-8-sig") as f:  # tolerate a BOM
        text = f.read()
    decoder = json.JSONDecoder()

    def skip(i: int) -> int:
        return _WHITESPACE.match(text, i).end()

    # Decoding element by element (raw_decode) keeps each row's offset, hence its line.
    items, line_no, last = [], 1, 0
    try:
        i = skip(0)
        if not text.startswith("[", i):
            items.append((text.count("\n", 0, i) + 1, decoder.decode(text)))
        else:
            i = skip(i + 1)
            while not text.startswith("]", i):
                obj, end = decoder.raw_decode(text, i)
                line_no, last = line_no + text.count("\n", last, i), i
                items.append((line_no, obj))
                i = skip(end)
                if text.startswith(",", i):
                    i = skip(i + 1)
                elif not text.startswith("]", i):
                    raise json.JSONDecodeError("expected ',' or ']'", text, i)
            if skip(i + 1) != len(text):
                raise json.JSONDecodeError("extra data", text, skip(i + 1))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}, line {e.lineno}: malformed JSON ({e.msg})") from e
    for line_no, obj in items:
        if not isinstance(obj, dict):
            raise ValueError(f"{path}, line {line_no}: expected a JSON object")
        yield path, line_no, obj


def _iter_rows(path: str) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Rows of a .jsonl, a .json, or every .json(l) file under a directory (sorted; MATH's tree)."""
    if os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                if name.endswith((".json", ".jsonl")):
                    yield from _iter_rows(os.path.join(root, name))
        return
    yield from (_iter_json(path) if path.endswith(".json") else _iter_jsonl(path))


def _get(row: dict[str, Any], field: str) -> Any:
    """row[field], matching the key case-insensitively; None if absent."""
    if field in row:
        return row[field]
    for key, value in row.items():
        if key.lower() == field:
            return value
    return None


def _text(row: dict[str, Any], field: str, where: str) -> str:
    """A required, non-empty field as a stripped string (numbers are converted)."""
    value = _get(row, field)
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int | float)
        or not str(value).strip()
    ):
        raise ValueError(f"{where}: missing or empty field '{field}'")
    return str(value).strip()


def _uid(root: str, file: str, line_no: int) -> str:
    """'<file>:<line>', the file relative to a directory root (MATH reuses names across folders)."""
    name = os.path.relpath(file, root) if os.path.isdir(root) else os.path.basename(file)
    return f"{name}:{line_no}"


def load_gsm8k(path: str) -> list[types.Example]:
    """GSM8K jsonl rows {question, answer}; the answer follows the last '####', commas removed."""
    examples = []
    for file, line_no, row in _iter_rows(path):
        where = f"{file}, line {line_no}"
        question, full = _text(row, "question", where), _text(row, "answer", where)
        reasoning, sep, final = full.rpartition("####")
        answer = final.strip().replace(",", "")
        if not sep or not answer:
            raise ValueError(f"{where}: field 'answer' has no final answer after '####'")
        examples.append(
            types.Example(
                uid=_uid(path, file, line_no),
                prompt=question,
                answer=answer,
                solution=full,  # as shipped: calculator annotations and the '#### N' line
                source="gsm8k",
            )
        )
    return examples


def _extras(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any] | None:
    meta = {f: _get(row, f) for f in fields if _get(row, f) is not None}
    return meta or None


def load_math(path: str) -> list[types.Example]:
    """MATH rows {problem, solution}; the answer is the solution's last \\boxed{} content.

    `path` is a .json (one object or a list), a .jsonl, or the MATH directory tree of .json files.
    A row's own `answer` field, where present (MATH-500), wins over the boxed one.
    """
    examples = []
    for file, line_no, row in _iter_rows(path):
        where = f"{file}, line {line_no}"
        problem, solution = _text(row, "problem", where), _text(row, "solution", where)
        if _get(row, "answer") is not None:
            answer = _text(row, "answer", where)
        else:
            answer = (last_boxed(solution) or "").strip()
            if not answer:
                raise ValueError(f"{where}: field 'solution' has no non-empty \\boxed{{}} answer")
        examples.append(
            types.Example(
                uid=_uid(path, file, line_no),
                prompt=problem,
                answer=answer,
                solution=solution,
                source="math",
                meta=_extras(row, ("level", "type", "subject", "unique_id")),
            )
        )
    return examples


def load_answer_jsonl(path: str, *, source: str = "") -> list[types.Example]:
    """MATH-500 / AIME style rows {problem, answer[, solution]}; numeric answers become strings."""
    examples = []
    for file, line_no, row in _iter_rows(path):
        where = f"{file}, line {line_no}"
        solution = _get(row, "solution")
        examples.append(
            types.Example(
                uid=_uid(path, file, line_no),
                prompt=_text(row, "problem", where),
                answer=_text(row, "answer", where),
                solution=str(solution) if solution else None,
                source=source,
                meta=_extras(row, ("id", "unique_id", "level", "subject", "year", "url")),
            )
        )
    return examples


def _verl_prompt(prompt: Any, where: str) -> str:
    """The user text of a verl `prompt`: a string, or the last user message of a chat list."""
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if isinstance(prompt, list | tuple):
        users = [
            m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"
        ]
        if users and isinstance(users[-1], str) and users[-1].strip():
            return users[-1]
    raise ValueError(f"{where}: field 'prompt' is neither text nor a chat list with a user message")


def load_parquet(path: str) -> list[types.Example]:
    """verl-style parquet rows {prompt, reward_model.ground_truth[, data_source, extra_info]}.

    Chat prompts keep the last user message as `prompt` and the whole list in meta["messages"].
    Rows are numbered from 1 in errors and uids, like lines.
    """
    _check_exists(path)
    try:
        import pyarrow.parquet as pq  # lazy: only this loader needs pyarrow
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install 'pyarrow>=26,<27'") from e
    examples = []
    for row_no, row in enumerate(pq.read_table(path).to_pylist(), start=1):
        where = f"{path}, row {row_no}"
        raw_prompt = row.get("prompt")
        prompt = _verl_prompt(raw_prompt, where)
        truth = (row.get("reward_model") or {}).get("ground_truth")
        if isinstance(truth, list | tuple):
            truth = truth[0] if len(truth) == 1 else None  # several gold answers: not supported
        if isinstance(truth, bool) or not isinstance(truth, str | int | float):
            truth = None
        if truth is None or not str(truth).strip():
            raise ValueError(f"{where}: missing or empty field 'reward_model.ground_truth'")
        meta = {k: row[k] for k in ("data_source", "ability", "extra_info") if row.get(k)}
        if not isinstance(raw_prompt, str):
            meta["messages"] = raw_prompt
        examples.append(
            types.Example(
                uid=_uid(path, path, row_no),
                prompt=prompt,
                answer=str(truth).strip(),
                source=str(row.get("data_source") or "parquet"),
                meta=meta or None,
            )
        )
    return examples


def load(kind: str, path: str) -> list[types.Example]:
    """Dispatches on `kind` in KINDS ("answer" is MATH-500 / AIME style), e.g. from c.data.kind."""
    if kind == "gsm8k":
        return load_gsm8k(path)
    elif kind == "math":
        return load_math(path)
    elif kind == "answer":
        return load_answer_jsonl(path)
    elif kind == "parquet":
        return load_parquet(path)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
