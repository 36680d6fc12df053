"""Whether a node's data fits the federation: one image's (C, H, W) and the number of classes.

Every sum of a run adds values of one shape (dream changes of the dreams' shape, soft labels of
the run's classes), and every model file says which images it takes, so a node whose data has
another shape must not take part: it would be summed into nothing sensible, or fail a step later.
Its daemon reports its data's shape and classes at Ready; this module decides, without grpc.

Where the federation's shape comes from: the run's data set. The coordinator loads it anyway (it
draws the partition summary and evaluates the server model on its test split), and its spec is
the run config's, not a node's private data, so the shape is known before any node is ready
(`CoordinatorService` passes it in). A federation given none (one built without a run's data
set, as the in-process test federations are) takes the first ready node's shape as its own, and
every later node must match that one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.errors import InvalidMessage, Misfit
from protos.refusals import DATA_MISMATCH, OUTDATED_NODE

FIX = "give this node a data set of the federation's shape and classes (codream node --dataset)"


@dataclass(frozen=True)
class DataShape:
    input_shape: tuple[int, ...]  # (C, H, W) of one image
    num_classes: int

    def __str__(self) -> str:
        return f"{self.input_shape} and {self.num_classes} classes"


def offered_shape(node_id: str, input_shape: Sequence[int], num_classes: int) -> DataShape:
    """The shape a node's Ready reports; Misfit (outdated-node) when it reports none, since
    nothing could then be checked, and InvalidMessage when what it reports is no image shape."""
    if not input_shape and not num_classes:
        raise Misfit(f"node {node_id} reported no data shape at Ready: its codream predates "
                     f"that check; upgrade codream on node {node_id}", OUTDATED_NODE)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1 or num_classes < 2:
        raise InvalidMessage(f"input_shape must be (C, H, W) of positive sizes and num_classes "
                             f">= 2, got {shape} and {num_classes}")
    return DataShape(shape, int(num_classes))


class FederationData:
    """The federation's data shape, given (the run's data set) or fixed by the first ready node."""

    def __init__(self, expected: DataShape | None = None) -> None:
        self._expected = expected
        self._lock = threading.Lock()

    @property
    def expected(self) -> DataShape | None:
        with self._lock:
            return self._expected

    def admit(self, node_id: str, offered: DataShape) -> None:
        """Returns if `offered` fits; raises Misfit (data-mismatch), naming both, if not."""
        with self._lock:
            if self._expected is None:
                self._expected = offered
                return
            expected = self._expected
        if offered != expected:
            raise Misfit(f"node {node_id}'s data has input shape {offered}; this federation's is "
                         f"{expected}: {FIX}", DATA_MISMATCH)
