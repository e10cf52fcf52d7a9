"""Schemathesis hooks for ``test_api_schemathesis`` (loaded by ``st run`` through
``SCHEMATHESIS_HOOKS``; not a test module).

The document cannot know which namespaces a deployment has configured: a
notification for any other is refused with 422, rightly. Before generating, the
hook states this deployment's namespaces in the intake body's schema (as an
``enum``), so a request Schemathesis believes valid is valid here too, and one
naming another namespace counts as invalid and must be refused. Nothing else is
changed.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

NAMESPACES_ENV = "RECONCILE_TEST_NAMESPACES"


@schemathesis.hook
def before_load_schema(_context: Any, raw_schema: dict[str, Any]) -> None:
    namespaces = os.environ[NAMESPACES_ENV].split(",")
    body = raw_schema["components"]["schemas"]["Notification"]
    body["properties"]["namespace"]["enum"] = namespaces
