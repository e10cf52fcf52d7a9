"""Outgoing dispatch (SPEC O): route -> filter -> compose -> transport, plus retry timing.

This package holds the store-independent core; the outbox, audit and worker
that drive it live next to it once the store offers outbox and audit tables.
"""
