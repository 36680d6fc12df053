"""Nested frozen config dataclasses from mappings (TOML, environment strings, flags) and back.

Generic: it knows nothing of CoDream's fields. `build` coerces each value to its declared type
and refuses unknown keys, naming the dotted field; `to_toml` writes what `build` reads back.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, of the wrong type or out of range; names the field."""


def require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{name}: {message}")


def _convert(value: Any, hint: Any, name: str) -> Any:
    """Coerces TOML, environment (strings) and flag values to the declared type, or raises."""
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        require(isinstance(value, Mapping), name, f"must be a table, got {value!r}")
        return build(hint, value, prefix=f"{name}.")
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        require(isinstance(value, (list, tuple)), name, f"must be a list, got {value!r}")
        return tuple(str(v) for v in value)
    if hint is bool:
        if isinstance(value, str):
            lowered = value.lower()
            require(lowered in ("true", "false", "1", "0"), name, f"must be true or false, got {value!r}")
            return lowered in ("true", "1")
        require(isinstance(value, bool), name, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be an integer, got {value!r}") from None
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be a number, got {value!r}") from None
    if hint is str:
        require(isinstance(value, str), name, f"must be a string, got {value!r}")
        return value
    return value


def build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Builds a (nested) config dataclass from a mapping; unknown keys are errors, not ignored."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{prefix}{key}: unknown field; allowed: {', '.join(sorted(known))}"
            )
    kwargs = {key: _convert(value, hints[key], f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {error}") from None


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts; override wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def dotted(assignments: Mapping[str, Any]) -> dict[str, Any]:
    """{'dream.global_steps': 5} → {'dream': {'global_steps': 5}}."""
    out: dict[str, Any] = {}
    for key, value in assignments.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict for metrics.json and TOML output."""
    data = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def to_toml(config: Any) -> str:
    """Writes the config as TOML so a run directory records exactly what ran."""

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return repr(value)

    data = to_dict(config)
    lines = [f"{k} = {scalar(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{k} = {scalar(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"
