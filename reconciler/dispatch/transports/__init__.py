"""Transports: one per outgoing protocol, all behind :class:`base.Transport`."""
