"""Shared test set-up. Peers (real servers the tests talk to) live in tests/peers/."""

pytest_plugins = [
    "peers.postgres",
    "peers.smtp_sink",
    "peers.smtp_fixtures",
    "peers.oauth_server",
    "peers.dovecot",
    "peers.network_guard",
]
