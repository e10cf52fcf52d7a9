"""Continuous reconciliation (SPEC X5): follow git, apply per SyncPolicy, heal drift,
verify and roll back."""
