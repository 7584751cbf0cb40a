"""Loader for the released LongTraceRL jsonl (HF dataset THU-KEG/LongTraceRL) into Examples.

A row, as the released training scripts read it (slime `--input-key input_messages --label-key
label`, metadata under "metadata"; the reward server takes `metadata["extra_reward_info"]`):

    {"source": "longqa",
     "input_messages": [{"role": "system", "content": ...}, {"role": "user", "content": ...}],
     "label": "<gold answer>",
     "metadata": {"extra_reward_info": {"rubrics": ["<gold entity>", ...], ...}, ...}}

Rubrics are plain strings (the reward server lower-cases them and checks substring hits). Every bad
row raises ValueError naming the file, its 1-based line and the field: nothing is skipped.
"""

from __future__ import annotations

import json
import os
from typing import Any

from rlvr_jax.data import types


def _fail(path: str, line: int, what: str) -> ValueError:
    return ValueError(f"{path}:{line}: {what}")


def parse_row(row: Any, path: str, line: int) -> types.Example:
    """One LongTraceRL row as an Example; `path` and `line` only name the row in errors."""
    if not isinstance(row, dict):
        raise _fail(path, line, f"row is a {type(row).__name__}, not a JSON object")
    messages = row.get("input_messages")
    if not isinstance(messages, list):
        raise _fail(path, line, "missing field 'input_messages' (a list of chat messages)")
    user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not user or not isinstance(user[-1].get("content"), str):
        raise _fail(path, line, "missing field 'input_messages': no user message with content")
    label = row.get("label")
    if label is None or (isinstance(label, str) and not label.strip()):
        raise _fail(path, line, "missing field 'label' (the answer)")
    meta_in = row.get("metadata")
    extra = meta_in.get("extra_reward_info") if isinstance(meta_in, dict) else None
    rubrics = extra.get("rubrics") if isinstance(extra, dict) else None
    if not isinstance(rubrics, list) or not rubrics:
        raise _fail(path, line, "missing field 'metadata.extra_reward_info.rubrics'")
    if not all(isinstance(r, str) and r.strip() for r in rubrics):
        raise _fail(path, line, "field 'metadata.extra_reward_info.rubrics' must hold strings")
    system = [
        m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "system"
    ]
    hops = extra.get("hops", meta_in.get("hops"))
    meta = {
        "gold_entities": list(rubrics),
        "hops": int(hops) if hops is not None else None,
        "system": system[0] if system else None,
    }
    if "dataset_name" in extra:
        meta["dataset_name"] = extra["dataset_name"]
    return types.Example(
        uid=f"{os.path.basename(path)}/{line}",
        prompt=user[-1]["content"],
        answer=str(label),
        source=str(row.get("source", "longtrace")),
        meta=meta,
    )


def load_jsonl(path: str | os.PathLike) -> list[types.Example]:
    """Every row of a LongTraceRL jsonl file (blank lines skipped) as an Example.

    prompt = the last user message, answer = `label`, meta = {"gold_entities": the rubrics,
    "hops": the row's hop count or None, "system": the system message or None}. uids are
    "<file name>/<line>".
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"LongTraceRL file not found: {path}")
    out = []
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise _fail(path, line, f"not valid JSON ({e.msg})") from None
            out.append(parse_row(row, path, line))
    return out
