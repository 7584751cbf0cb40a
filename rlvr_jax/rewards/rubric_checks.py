"""Programmatic rubric checks (docs/pow3r.md): Regex, Contains, Numeric, JsonSchema,
Length and Predicate, run by `run_check`, plus the JSON extraction and schema-subset validation
they use. rubric.py grades criteria with them. Host side: no JAX.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from rlvr_jax.rewards import json_text
from rlvr_jax.values import is_int, is_num

NO_JSON = object()  # extract_json's "nothing found" (JSON null is a real value: None)


@dataclasses.dataclass(frozen=True)
class Regex:
    """Passes if `pattern` matches somewhere in the target (re.search)."""

    pattern: str
    ignore_case: bool = False
    field: str | None = None  # check this string field of the response's JSON object instead

    def __post_init__(self):
        re.compile(self.pattern)  # a bad pattern is a rubric error, raised at construction


@dataclasses.dataclass(frozen=True)
class Contains:
    """Passes if `text` occurs in the target."""

    text: str
    case_sensitive: bool = False
    field: str | None = None


@dataclasses.dataclass(frozen=True)
class Numeric:
    """Extract a number and pass if |x - target| <= max(abs_tol, rel_tol * |target|).

    The number is group 1 (else the whole match) of the first match of `pattern`, or the last
    number in the target when `pattern` is None; a numeric JSON `field` is read directly.
    """

    target: float
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    pattern: str | None = None
    field: str | None = None

    def __post_init__(self):
        numbers = (self.target, self.abs_tol, self.rel_tol)
        if not all(map(is_num, numbers)) or min(self.abs_tol, self.rel_tol) < 0:
            raise ValueError(f"Numeric needs a finite target and tolerances >= 0: {self}")
        re.compile(self.pattern or "")


@dataclasses.dataclass(frozen=True)
class JsonSchema:
    """Passes if the response holds a JSON value valid under `schema` (see validate_json)."""

    schema: Mapping[str, Any]

    def __post_init__(self):
        _check_schema(self.schema)


@dataclasses.dataclass(frozen=True)
class Length:
    """Passes if min <= length <= max, counted in `unit` ("chars" or "words")."""

    min: int | None = None
    max: int | None = None
    unit: str = "chars"
    field: str | None = None

    def __post_init__(self):
        if self.unit not in ("chars", "words"):
            raise ValueError(f"Length.unit={self.unit!r} is not 'chars' or 'words'")
        for name in ("min", "max"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 0):
                raise ValueError(f"Length.{name}={value!r} must be None or an int >= 0")


@dataclasses.dataclass(frozen=True)
class Predicate:
    """Passes if fn(response) is True. fn should return False for absent content: an exception
    is a rubric bug, counted as an invalid verdict, never a silent pass or fail."""

    fn: Callable[[str], bool]


Check = Regex | Contains | Numeric | JsonSchema | Length | Predicate
_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SCHEMA_KEYS = {"type", "required", "properties", "enum", "minimum", "maximum", "items"}
_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")


def _check_schema(schema: Any) -> None:
    """Raise ValueError on a keyword or type outside the supported subset (a typo would pass)."""
    if not isinstance(schema, Mapping) or set(schema) - _SCHEMA_KEYS:
        raise ValueError(f"JSON schema {schema!r}: only keywords {sorted(_SCHEMA_KEYS)}")
    types = schema.get("type", "string")
    if any(t not in _TYPES for t in ([types] if isinstance(types, str) else types)):
        raise ValueError(f"JSON schema type {types!r}: not in {_TYPES}")
    for sub in schema.get("properties", {}).values():
        _check_schema(sub)
    if "items" in schema:
        _check_schema(schema["items"])


def extract_json(text: str) -> Any:
    """The JSON value of a response: the whole text, a wrapping ``` fence, else the first value
    that decodes at a '{' or '['. NO_JSON if none (NaN/Infinity are not JSON)."""
    text = text.strip()
    m = json_text.FENCE_RE.match(text)
    for candidate in (text, m.group(1) if m else None):
        if candidate is not None:
            try:
                return json_text.loads(candidate)
            except ValueError:
                pass
    decoder = json.JSONDecoder(parse_constant=json_text.reject_constant)
    for start in [i for i, ch in enumerate(text) if ch in "{["][:64]:
        try:
            return decoder.raw_decode(text, start)[0]
        except ValueError:
            continue
    return NO_JSON


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", dict: "object", list: "array"}.get(type(value), "?")


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1 (Python's True == 1 would leak into enums)."""
    ta, tb = _json_type(a), _json_type(b)
    numeric = {"integer", "number"}
    return (ta == tb or {ta, tb} <= numeric) and a == b


def validate_json(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether `value` satisfies a JSON-schema subset: type (a name or a list; "integer" is a
    JSON integer, "number" any finite number, never a bool), required, properties, enum, minimum,
    maximum (inclusive, numbers only) and items."""
    kind = _json_type(value)
    if "type" in schema:
        allowed = [schema["type"]] if isinstance(schema["type"], str) else schema["type"]
        if kind not in allowed and not (kind == "integer" and "number" in allowed):
            return False
    if "enum" in schema and not any(_json_equal(value, e) for e in schema["enum"]):
        return False
    if kind in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            return False
        if "maximum" in schema and value > schema["maximum"]:
            return False
    if kind == "object":
        if any(k not in value for k in schema.get("required", ())):
            return False
        props = schema.get("properties", {})
        if not all(validate_json(value[k], sub) for k, sub in props.items() if k in value):
            return False
    if kind == "array" and "items" in schema:
        return all(validate_json(v, schema["items"]) for v in value)
    return True


def _target(text: str, field: str | None) -> Any:
    """The text a check looks at: the response, or one field of its JSON object (None if absent)."""
    if field is None:
        return text
    obj = extract_json(text)
    return obj.get(field) if isinstance(obj, dict) else None


def run_check(check: Check, response: str) -> bool:
    """Whether `response` passes a programmatic check (exceptions propagate: see Predicate)."""
    if isinstance(check, Predicate):
        out = check.fn(response)
        if not isinstance(out, bool | np.bool_):
            raise TypeError(f"predicate returned {type(out).__name__}, not bool")
        return bool(out)
    if isinstance(check, JsonSchema):
        value = extract_json(response)
        return value is not NO_JSON and validate_json(value, check.schema)
    target = _target(response, check.field)
    if isinstance(check, Numeric):
        if isinstance(target, int | float) and not isinstance(target, bool):
            x = float(target)
        elif not isinstance(target, str):
            return False
        elif check.pattern is not None:
            m = re.search(check.pattern, target)
            text = (m.group(1) if m.re.groups else m.group()) if m else None
            number = _NUMBER_RE.fullmatch(text.strip()) if text else None
            x = float(number.group()) if number else math.nan
        else:
            numbers = _NUMBER_RE.findall(target)
            x = float(numbers[-1]) if numbers else math.nan
        return abs(x - check.target) <= max(check.abs_tol, check.rel_tol * abs(check.target))
    if not isinstance(target, str):
        return False
    if isinstance(check, Regex):
        return re.search(check.pattern, target, re.I if check.ignore_case else 0) is not None
    if isinstance(check, Contains):
        if check.case_sensitive:
            return check.text in target
        return check.text.casefold() in target.casefold()
    if isinstance(check, Length):
        n = len(target) if check.unit == "chars" else len(target.split())
        return (check.min is None or n >= check.min) and (check.max is None or n <= check.max)
    raise TypeError(f"unknown check {check!r}")
