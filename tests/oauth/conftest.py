from .kit import _client_secret  # noqa: F401 - autouse fixture
