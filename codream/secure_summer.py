"""The in-process secure summer: `codream simulate` sums through the real secagg protocol.

It runs a one-shot Bonawitz session per sum (keys, shares, masks, unmasking) in process, with
the same quantisation as the cluster (codream.secure_plan), so a simulation and a cluster
with the same seeds compute the same numbers. Unless `secagg.authentication = "off"` the
session is authenticated, as a cluster under mTLS is: each member has an Ed25519 identity key
made in process for the summer's life, advertisements and survivor lists are signed, and the
consistency round runs before unmasking (the sum is the same; only the protocol's cost is).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from codream.aggregation import AggregateSum, BadContribution, Contribution, check_contribution
from codream.config import SecureAggregationConfig
from codream.messages import Task
from codream.secure_plan import (
    clip_for,
    fewest_members,
    protocol_of,
    scaled_input,
    session_config,
    to_aggregate,
    weight_unit,
)
from secagg import run_aggregation

log = logging.getLogger(__name__)


class InProcessSecureSummer:
    """`weights`: every node's weight (skipping nodes too), which fixes the unit W."""

    def __init__(self, settings: SecureAggregationConfig, weights: Mapping[str, float]):
        self.settings = settings
        self.members = sorted(weights)
        self.weights = dict(weights)
        self.unit = weight_unit(weights.values())
        self.clipped = 0
        self.authenticated = settings.authentication != "off"
        # by client index, like the long-lived identity keys of a cluster's nodes
        self._identity_keys = ({i: Ed25519PrivateKey.generate() for i in range(len(self.members))}
                               if self.authenticated else None)

    def sum(self, contributions: Mapping[str, Contribution], size: int, task: Task | None = None,
            members: Sequence[str] | None = None) -> AggregateSum:
        """One session among `members` (a sampled round's nodes; default: all), whose weight
        unit W is their largest weight, as a cluster's session among the same nodes has it."""
        if task is None:
            raise ValueError("the secure summer needs the task to pick the clip")
        if members is None:
            session, unit = self.members, self.unit
        else:
            chosen = set(members)
            session = [node for node in self.members if node in chosen]
            unit = weight_unit(self.weights[node] for node in session)
        fewest = fewest_members(self.settings)  # 2, or c + 2 with c colluding nodes
        if len(session) < fewest:
            return AggregateSum(np.zeros(size), 0.0, (),
                                {"*": f"fewer than {fewest} members for a secure sum"})
        skipped: dict[str, str] = {}
        inputs, weights = {}, {}
        for index, node in enumerate(session):
            contribution = contributions.get(node)
            if contribution is not None:
                try:
                    check_contribution(contribution, size)
                except BadContribution as error:
                    log.warning("node %s excluded from the sum: %s", node, error)
                    skipped[node], contribution = str(error), None
            else:
                skipped[node] = "no contribution"
            inputs[index], weights[index] = scaled_input(contribution, size, unit)
        config = session_config(self.settings, len(session), size, clip_for(task, self.settings))
        config = dataclasses.replace(config, authenticated=self.authenticated)
        keys = (None if self._identity_keys is None
                else {i: self._identity_keys[i] for i in range(len(session))})
        result = run_aggregation(config, inputs, weights, identity_keys=keys)
        if result.clipped:
            self.clipped += result.clipped
            log.warning("%s: %d elements clipped to ±%g", task.task_id, result.clipped, config.clip)
        return to_aggregate(result, unit, session, skipped, protocol=protocol_of(config))
