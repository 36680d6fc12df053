"""Refusals a retry cannot fix, marked for the node in a status's trailing metadata.

A status code alone is ambiguous: FAILED_PRECONDITION at Ready means "your membership ended,
join again" (a node that took long to build) as well as "your data does not fit this
federation". For the second kind the coordinator adds `codream-refusal: <reason>` to the
trailing metadata, and the node stops with the status's message instead of re-joining forever.
"""

from __future__ import annotations

from typing import Any

REFUSAL_KEY = "codream-refusal"
DATA_MISMATCH = "data-mismatch"  # the node's data has another shape or number of classes
OUTDATED_NODE = "outdated-node"  # the node sent no data shape: it predates the fields


def refusal_metadata(reason: str) -> tuple[tuple[str, str], ...]:
    """The trailing metadata the coordinator sets before aborting with a final refusal."""
    return ((REFUSAL_KEY, reason),)


def refusal_of(error: Any) -> str | None:
    """The final refusal's reason an RpcError carries, or None (a refusal a retry may fix)."""
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == REFUSAL_KEY:
            return str(value)
    return None
