"""Policies as data (SPEC C8): see ``reconciler.policy.engine`` and ``policies/README.md``."""
