"""Client node: one organisation's data, model and device, and the tasks it runs for a federation."""
