"""apiVersion conversion (SPEC C9).

``reconciler.dev/v1alpha1`` is the older field set, mirroring the products we
replace before their OAuth rework: OAuth had ``tenantId`` and
``authorizationUrl`` only. Loading it converts to ``v1`` in memory and says
what was filled in, instead of making admins re-enter every server;
``reconcile convert`` writes the conversion back to the files.

Conversions work on any mutable mapping (the positional loader's PosDict or
ruamel's CommentedMap) so validate and convert share one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from reconciler.config.models.base import API_GROUP, API_VERSION

V1ALPHA1 = f"{API_GROUP}/v1alpha1"


def _rename(mapping: MutableMapping[str, Any], old: str, new: str) -> None:
    """Rename a key in place, keeping its position marks when the mapping has them."""
    rename = getattr(mapping, "rename_key", None)  # PosDict moves the marks along
    if rename is not None:
        rename(old, new)
        return
    mapping[new] = mapping.pop(old)


def _v1alpha1_to_v1(doc: MutableMapping[str, Any]) -> list[str]:
    notes: list[str] = []
    spec = doc.get("spec")
    auth = spec.get("auth") if isinstance(spec, MutableMapping) else None
    if isinstance(auth, MutableMapping) and auth.get("type") == "oauth2":
        if "tenantId" in auth:
            _rename(auth, "tenantId", "tenant")
            notes.append("renamed spec.auth.tenantId to spec.auth.tenant")
        authorize = auth.get("authorizationUrl")
        if isinstance(authorize, str) and "tokenUrl" not in auth and authorize.endswith(
            "/authorize"):
            auth["tokenUrl"] = authorize[: -len("/authorize")] + "/token"
            notes.append(f"filled spec.auth.tokenUrl = {auth['tokenUrl']} from authorizationUrl")
        for name in ("scope", "redirectUrl"):
            if name not in auth:
                notes.append(f"spec.auth.{name} is derived (see `validate --show-derived`)")
    doc["apiVersion"] = API_VERSION
    return notes


Conversion = Callable[[MutableMapping[str, Any]], list[str]]  # in place; returns notes
CONVERSIONS: dict[str, Conversion] = {V1ALPHA1: _v1alpha1_to_v1}


def upgrade(doc: MutableMapping[str, Any]) -> list[str] | None:
    """Convert ``doc`` to the current version in place.

    Returns the notices (possibly empty) when a conversion ran, ``None`` when
    the document already had the current version or an unknown one.
    """
    version = doc.get("apiVersion")
    convert = CONVERSIONS.get(version) if isinstance(version, str) else None
    if convert is None:
        return None
    notes = convert(doc)
    return [f"converted from {version} to {API_VERSION}", *notes]
