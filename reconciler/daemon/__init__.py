"""The dispatch daemon: intake API, workers, health monitor, metrics (SPEC O, X3)."""
