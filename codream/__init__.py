"""CoDream: federated learning by exchanging dreams instead of models."""
