"""The one table of strategies: config validation, both CLIs' progress and the checkpoint read it."""

from __future__ import annotations

from codream.strategies.base import Strategy

STRATEGIES: dict[str, type[Strategy]] = {}


def register(strategy: type[Strategy]) -> type[Strategy]:
    """Adds `strategy` under its name (a class decorator too); a name is taken once."""
    name = getattr(strategy, "name", "")
    if not name or not isinstance(name, str):
        raise ValueError(f"{strategy.__name__} needs a class attribute `name`")
    if STRATEGIES.get(name, strategy) is not strategy:
        raise ValueError(f"strategy {name!r} is already registered ({STRATEGIES[name].__name__})")
    STRATEGIES[name] = strategy
    return strategy


def unregister(name: str) -> None:
    STRATEGIES.pop(name, None)


def strategy_named(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; registered: {', '.join(STRATEGIES)}") from None
