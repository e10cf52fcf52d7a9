"""Reading the history (SPEC P4) for `reconcile history` and `drift`: ``queries``."""
