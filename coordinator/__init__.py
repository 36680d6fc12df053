"""Coordinator: membership, the round state machine, aggregation and the server optimiser."""
