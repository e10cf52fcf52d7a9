"""Authentication blocks shared by outgoing and incoming servers."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from reconciler.config.models.base import HttpUrl, Model, NonEmptyStr
from reconciler.config.secrets import SecretRef


class OAuthProvider(StrEnum):
    MICROSOFT = "microsoft"
    GOOGLE = "google"
    GENERIC = "generic"


class OAuthGrant(StrEnum):
    # Delegated: an admin signs in once (`reconcile auth login`), we keep the refresh token.
    AUTHORIZATION_CODE = "authorizationCode"
    # App-only: the app's own identity; Graph/EWS with application permissions.
    CLIENT_CREDENTIALS = "clientCredentials"


class NoAuth(Model):
    """The server accepts mail without authentication (an internal relay)."""

    type: Literal["none"] = "none"


class BasicAuth(Model):
    """Username and password (SMTP AUTH PLAIN/LOGIN, IMAP LOGIN, EWS NTLM/Basic)."""

    type: Literal["basic"] = "basic"
    username: NonEmptyStr | None = Field(
        default=None, description="Login name; defaults to the server's email address.")
    password: SecretRef


class OAuth2Auth(Model):
    """OAuth 2.0. Unset URLs and scope are derived from provider, protocol and cloud."""

    type: Literal["oauth2"] = "oauth2"
    provider: OAuthProvider = OAuthProvider.MICROSOFT
    grant: OAuthGrant = OAuthGrant.AUTHORIZATION_CODE
    client_id: NonEmptyStr
    client_secret: SecretRef | None = Field(
        default=None, description="Required unless the provider allows public clients.")
    tenant: NonEmptyStr | None = Field(
        default=None, description="Microsoft Entra tenant id or domain (Microsoft only).")
    username: NonEmptyStr | None = Field(
        default=None, description="Mailbox to sign in as; defaults to the server's email.")
    authorization_url: HttpUrl | None = None
    token_url: HttpUrl | None = None
    scope: list[NonEmptyStr] | None = None
    redirect_url: HttpUrl | None = None


Auth = Annotated[NoAuth | BasicAuth | OAuth2Auth, Field(discriminator="type")]
