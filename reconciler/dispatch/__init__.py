"""Outgoing dispatch (SPEC O): outbox -> route -> filter -> compose -> transport -> audit."""
