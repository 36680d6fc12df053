"""Federated strategies, one module each, registered in one table (`registry.STRATEGIES`).

A new strategy is one file: subclass `Strategy`, name the node tasks it sends, write its
`round`, and `register` it; config validation, the CLIs' progress and checkpoints follow.
"""

from codream.strategies.base import FederationSetting, Strategy
from codream.strategies.centralized import Centralized
from codream.strategies.codream import CoDream
from codream.strategies.fedavg import FedAvg
from codream.strategies.independent import Independent
from codream.strategies.registry import STRATEGIES, register, strategy_named, unregister

for _builtin in (CoDream, FedAvg, Independent, Centralized):
    register(_builtin)

__all__ = ["STRATEGIES", "FederationSetting", "Strategy", "register", "strategy_named", "unregister"]
