"""Continuous reconciliation: follow git, apply per SyncPolicy, heal drift, verify and roll back (SPEC X5)."""
