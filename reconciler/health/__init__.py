"""Server health (SPEC O6, O9, O10): connection checks step by step (``probes``),
the likely fix for a failed step (``diagnose``), the periodic monitor that
records status and steers failover (``monitor``), and admin notifications on
transitions (``notifier``).

Modules are imported where used; nothing here is loaded by commands that do
not check servers.
"""
