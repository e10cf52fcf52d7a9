"""Server health (SPEC O6, O9, O10): connection checks step by step (``probes``),
the likely fix for a failed step (``diagnose``), the periodic monitor that
records status, steers failover and notifies transitions through
:mod:`reconciler.runtime.notifier` (``monitor``).

Modules are imported where used; nothing here is loaded by commands that do
not check servers.
"""
