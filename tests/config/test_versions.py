"""apiVersion conversion (SPEC C9): older documents load, convert, and say what was filled in."""

from __future__ import annotations

import io
from pathlib import Path

from ruamel.yaml import YAML

from reconciler.config.desired import ResourceKey
from reconciler.config.diagnostics import Severity
from reconciler.config.models.auth import OAuth2Auth
from reconciler.config.versions import V1ALPHA1, upgrade

from .helpers import Expect, assert_reported, describe, validate_files

AUTHORIZE = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize"
TOKEN = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"

LEGACY = f"""\
apiVersion: reconciler.dev/v1alpha1
kind: OutgoingServer
metadata: {{name: legacy-o365, namespace: legacy}}
spec:
  email: desk@contoso.example
  replyTo: desk@contoso.example
  host: smtp.office365.com
  security: starttls
  primary: true
  auth:
    type: oauth2
    provider: microsoft
    clientId: 3f2a9c1e-0b7d-4e55-9a61-5d2c8e7f1a01
    clientSecret: {{secretRef: env:O365_SECRET}}
    tenantId: contoso.onmicrosoft.com
    authorizationUrl: {AUTHORIZE}
"""


def test_v1alpha1_server_converts_with_a_notice_and_validates_clean(tmp_path: Path) -> None:
    result = validate_files(tmp_path, {"legacy.yaml": LEGACY})

    assert_reported(result, [Expect(
        "legacy.yaml", 1, 13, "apiVersion",
        "converted from reconciler.dev/v1alpha1 to reconciler.dev/v1; "
        "renamed spec.auth.tenantId to spec.auth.tenant; "
        f"filled spec.auth.tokenUrl = {TOKEN} from authorizationUrl; "
        "spec.auth.scope is derived (see `validate --show-derived`); "
        "spec.auth.redirectUrl is derived (see `validate --show-derived`)",
        severity=Severity.NOTICE, hint="reconcile convert")])
    assert result.ok
    assert [d.severity for d in result.diagnostics] == [Severity.NOTICE], describe(
        result.diagnostics)

    [res] = result.resources
    assert res.model.api_version == "reconciler.dev/v1"
    auth = res.model.spec.auth
    assert isinstance(auth, OAuth2Auth)
    assert auth.tenant == "contoso.onmicrosoft.com"
    assert (auth.authorization_url, auth.token_url) == (AUTHORIZE, TOKEN)
    derived = {d.dotted: d.value for d in res.derivations}
    assert derived["spec.auth.scope"] == [
        "https://outlook.office365.com/SMTP.Send", "offline_access"]
    assert derived["spec.auth.redirectUrl"] == "http://localhost:8765/oauth/callback"
    # tokenUrl came from the conversion, not from derivation: the file said where to sign in
    assert "spec.auth.tokenUrl" not in derived

    assert result.desired is not None
    stored = result.desired.resources[ResourceKey("OutgoingServer", "legacy", "legacy-o365")]
    assert stored.api_version == "reconciler.dev/v1"
    assert stored.spec["auth"]["tenant"] == "contoso.onmicrosoft.com"
    assert "tenantId" not in stored.spec["auth"]


def test_converted_errors_still_point_at_the_renamed_key(tmp_path: Path) -> None:
    broken = LEGACY.replace("tenantId: contoso.onmicrosoft.com", "tenantId: ''")
    result = validate_files(tmp_path, {"legacy.yaml": broken})
    assert_reported(result, [Expect("legacy.yaml", 15, 15, "spec.auth.tenant",
                                    "must not be empty")])


def test_existing_token_url_is_kept() -> None:
    doc = {"apiVersion": V1ALPHA1, "kind": "OutgoingServer", "spec": {"auth": {
        "type": "oauth2", "authorizationUrl": AUTHORIZE, "tokenUrl": "https://t.example/token",
        "scope": ["x"], "redirectUrl": "https://r.example/cb"}}}
    assert upgrade(doc) == [f"converted from {V1ALPHA1} to reconciler.dev/v1"]
    assert doc["spec"]["auth"]["tokenUrl"] == "https://t.example/token"
    assert doc["apiVersion"] == "reconciler.dev/v1"


def test_non_oauth_documents_only_change_version() -> None:
    doc = {"apiVersion": V1ALPHA1, "kind": "RecipientFilter", "spec": {"type": "allow"}}
    assert upgrade(doc) == [f"converted from {V1ALPHA1} to reconciler.dev/v1"]
    assert doc == {"apiVersion": "reconciler.dev/v1", "kind": "RecipientFilter",
                   "spec": {"type": "allow"}}


def test_current_and_unknown_versions_are_left_alone() -> None:
    for version in ("reconciler.dev/v1", "reconciler.dev/v9", None):
        doc = {"apiVersion": version, "spec": {"auth": {"type": "oauth2", "tenantId": "t"}}}
        assert upgrade(doc) is None
        assert doc["spec"]["auth"] == {"type": "oauth2", "tenantId": "t"}


def test_conversion_works_on_comment_preserving_ruamel_documents() -> None:
    yaml = YAML()
    doc = yaml.load(LEGACY.replace("    tenantId:", "    # the tenant\n    tenantId:"))
    notes = upgrade(doc)
    assert notes is not None and "renamed spec.auth.tenantId to spec.auth.tenant" in notes
    out = io.StringIO()
    yaml.dump(doc, out)
    text = out.getvalue()
    assert "apiVersion: reconciler.dev/v1\n" in text
    assert "tenantId" not in text
    auth = YAML(typ="safe").load(text)["spec"]["auth"]
    assert (auth["tenant"], auth["tokenUrl"]) == ("contoso.onmicrosoft.com", TOKEN)
