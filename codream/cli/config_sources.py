"""Which layer set a config field (a flag, a CODREAM_* variable, the --config file), so that an
error names what the user typed rather than the field's internal name."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from codream.config import ConfigError

# "dream.global_steps: must be >= 1": the field an error is about, then what is allowed.
_FIELD_ERROR = re.compile(r"([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*): (.*)", re.DOTALL)


@dataclass(frozen=True)
class ConfigSources:
    """Where each given field came from; a field found in none of them is a default."""

    config_file: str | None = None
    file_data: Mapping[str, Any] = field(default_factory=dict)  # the file's nested tables
    variables: Mapping[str, str] = field(default_factory=dict)  # dotted field -> CODREAM_* name
    flags: Mapping[str, str] = field(default_factory=dict)  # dotted field -> the flag as typed

    def source_of(self, name: str) -> str | None:
        """How the user set `name`, highest layer first: `--clients`, `CODREAM_X (environment)`,
        `--config FILE: name`; None when it is a default."""
        if name in self.flags:
            return self.flags[name]
        if name in self.variables:
            return f"{self.variables[name]} (environment)"
        if _holds(self.file_data, name.split(".")):
            return f"--config {self.config_file}: {name}"
        return None

    def explain(self, error: ConfigError) -> ConfigError:
        """`error` with its leading field replaced by where the user set it (unchanged if a default)."""
        match = _FIELD_ERROR.fullmatch(str(error))
        source = match and self.source_of(match.group(1))
        if not source:
            return error
        assert match is not None
        return ConfigError(f"{source}: {match.group(2)}")


def _holds(data: Any, path: list[str]) -> bool:
    for part in path:
        if not isinstance(data, Mapping) or part not in data:
            return False
        data = data[part]
    return True
