"""ProxyServer: how servers reach the internet when there is no direct route."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from reconciler.config.models.base import Hostname, Model, NonEmptyStr, Port, Resource
from reconciler.config.secrets import SecretRef


class ProxyType(StrEnum):
    HTTP = "http"
    HTTPS = "https"
    SOCKS5 = "socks5"


class ProxyServerSpec(Model):
    type: ProxyType = ProxyType.HTTP
    host: Hostname
    port: Port
    username: NonEmptyStr | None = None
    password: SecretRef | None = None
    no_proxy: list[NonEmptyStr] = Field(
        default_factory=list, description="Hosts reached directly, e.g. an on-prem relay.")


class ProxyServer(Resource):
    KIND: ClassVar[str] = "ProxyServer"
    kind: Literal["ProxyServer"]
    spec: ProxyServerSpec
