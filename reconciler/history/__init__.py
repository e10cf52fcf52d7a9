"""View History (SPEC P4): the hash chain (``chain``) and read helpers (``queries``).

Kept import-free so that ``state`` can use ``history.chain`` without a cycle.
"""
