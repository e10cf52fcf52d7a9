"""Credentials bound to the endpoints they were applied with (SPEC S2).

- ``endpoints``: which credential a stored spec presents to which endpoint (pure).
- ``moves``: a plan's credential moves against the store's bindings (pure).
- ``gate``: the daemon-side check made right before a credential is presented.

See docs/credentials.md.
"""
