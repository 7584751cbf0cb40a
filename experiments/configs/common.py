"""Shared config helpers: `parse_arg` for `config.py:key=value,...` strings."""

from __future__ import annotations


def parse_arg(arg: str | None, **defaults):
    """Parses 'k=v,k2=v2' (or a bare preset name) over `defaults`, keeping each default's type."""
    out = dict(defaults)
    if not arg:
        return out
    for i, part in enumerate(arg.split(",")):
        if "=" not in part:
            if i == 0 and "preset" in out:
                out["preset"] = part
                continue
            raise ValueError(f"config arg {part!r} is not key=value")
        k, v = part.split("=", 1)
        if k not in out:
            raise ValueError(f"unknown config arg {k!r}; known: {sorted(out)}")
        kind = type(out[k])
        out[k] = (v.lower() in ("1", "true", "yes")) if kind is bool else kind(v)
    return out
