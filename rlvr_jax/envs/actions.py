"""Assistant turns as actions: free text for the user, and tool calls in the model's chat format.

A tool call is `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen2.5/Hermes style,
which Qwen chat templates render and parse). `parse_action` never raises: malformed JSON, a call
without a name or with non-object arguments, and unclosed tags come back as `Action.errors`, for the
environment to count as a hard fail or answer with a tool error.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


@dataclasses.dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Action:
    message: str  # the text outside tool calls, stripped
    tool_calls: tuple[ToolCall, ...] = ()
    errors: tuple[str, ...] = ()  # one line per malformed call


def parse_action(text: str) -> Action:
    calls, errors = [], []
    for i, m in enumerate(_CALL.finditer(text)):
        body = m.group(1).strip()
        try:
            obj = json.loads(body)
        except json.JSONDecodeError as e:
            errors.append(f"tool call {i}: malformed JSON ({e.msg} at char {e.pos})")
            continue
        except RecursionError:  # json nests by recursion: about 1,000 levels of [ or { raise
            errors.append(f"tool call {i}: malformed JSON (nested too deeply)")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            errors.append(f'tool call {i}: expected {{"name": str, "arguments": {{...}}}}')
            continue
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some templates emit arguments as a JSON string
            try:
                args = json.loads(args)
            except (json.JSONDecodeError, RecursionError):
                pass
        if not isinstance(args, dict):
            errors.append(f"tool call {i} ({obj['name']}): arguments must be a JSON object")
            continue
        calls.append(ToolCall(obj["name"], args))
    rest = _CALL.sub("", text)
    if OPEN in rest or CLOSE in rest:
        errors.append("unbalanced <tool_call> tags")
        rest = rest.replace(OPEN, "").replace(CLOSE, "")
    return Action(rest.strip(), tuple(calls), tuple(errors))


def format_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The text of one tool call (what a scripted expert writes)."""
    body = json.dumps({"name": name, "arguments": arguments}, separators=(",", ":"))
    return f"{OPEN}{body}{CLOSE}"
