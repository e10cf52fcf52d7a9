"""A real EWS endpoint for tests: HTTPS on 127.0.0.1 speaking Exchange Web Services SOAP.

Exchange cannot be reached from tests, so :class:`EwsPeer` answers what
exchangelib (and any EWS client) sends, on the wire format Exchange uses:

- ``POST /EWS/Exchange.asmx`` with a SOAP 1.1 envelope; answers carry the
  ``t:ServerVersionInfo`` header (Exchange 2019 numbers, and the odd
  ``V2017_07_11`` version string real servers send) and ``m:``/``t:``
  namespaced ``...ResponseMessage`` elements with ``ResponseClass`` and
  ``m:ResponseCode``.
- Authentication: ``Authorization: Basic`` for one user/password, or
  ``Authorization: Bearer`` for a set of tokens; anything else is HTTP 401 with
  ``WWW-Authenticate`` (``Basic realm=...`` and/or ``Bearer ...``), which is
  also what an unauthenticated client probing for the auth type sees.
- Operations: ``ConvertId`` (the version probe: the dummy id is malformed, as
  Exchange says), ``GetFolder`` on distinguished folders (root, inbox,
  sentitems, ...), ``ResolveNames`` and ``CreateItem`` with
  ``MessageDisposition`` ``SendOnly`` / ``SendAndSaveCopy``; every sent message
  is parsed and recorded (:class:`SentMessage`).
- A mailbox for the incoming-mail fetcher (:class:`Mailbox`, seeded with raw
  RFC 5322 bytes by :meth:`EwsPeer.deliver`): ``FindItem`` (restriction on
  ``message:IsRead``, sort on ``item:DateTimeReceived``, ``IndexedPageItemView``
  paging with ``IndexedPagingOffset`` / ``IncludesLastItemInRange``),
  ``GetItem`` (``MimeContent`` in base64, ``ErrorItemNotFound`` for ids that
  are gone), ``UpdateItem`` (``IsRead``; a stale ChangeKey is a conflict unless
  ``AlwaysOverwrite``), ``MoveItem`` (the moved item gets a new ItemId, as in
  Exchange), ``FindFolder`` (shallow, by DisplayName), ``CreateFolder``
  (``ErrorFolderExists`` for a taken name) and ``GetFolder`` by FolderId with
  real TotalCount/UnreadCount.
- Faults, scripted per operation (:meth:`EwsPeer.fail_next`): ``ErrorServerBusy``
  as a SOAP fault with ``BackOffMilliseconds``, HTTP 503 with ``Retry-After``,
  response-message errors (``ErrorInvalidRecipients``, ``ErrorAccessDenied``,
  ``ErrorMessageSizeExceeded``, ...). Recipients in ``unknown_recipients`` are
  refused with ``ErrorInvalidRecipients``; impersonation can be refused.
- :class:`ConnectProxy` is an HTTP proxy tunnelling CONNECT to loopback ports.
- ``delay`` slows every answer; ``hold()`` keeps CreateItem waiting until
  released, and ``arrived`` says a CreateItem is being held.
"""

from __future__ import annotations

import base64
import contextlib
import email
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.outgoing_server import OutgoingServer

from .smtp import HOST, PeerCerts, outgoing_server

PATH = "/EWS/Exchange.asmx"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"

_NS = f'xmlns:s="{SOAP}" xmlns:m="{M}" xmlns:t="{T}"'
_VERSION = ('<t:ServerVersionInfo MajorVersion="15" MinorVersion="2" MajorBuildNumber="1118" '
            'MinorBuildNumber="7" Version="V2017_07_11"/>')
_FOLDER_NAMES = {
    "root": ("", "Top of Information Store"), "msgfolderroot": ("IPF.Note", "Top of Information "
                                                                "Store"),
    "inbox": ("IPF.Note", "Inbox"), "sentitems": ("IPF.Note", "Sent Items"),
    "drafts": ("IPF.Note", "Drafts"), "deleteditems": ("IPF.Note", "Deleted Items"),
}
_MESSAGES = {
    "ErrorInvalidRecipients": "At least one recipient isn't valid., A message can't be sent "
                              "because it contains no recipients.",
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorMessageSizeExceeded": "The message exceeds the maximum supported size.",
    "ErrorMailRecipientNotFound": "The recipient couldn't be found.",
    "ErrorSendAsDenied": "The user account which was used to submit this request does not "
                         "have the right to send mail on behalf of the specified sending account.",
    "ErrorServerBusy": "The server cannot service this request right now. Try again later.",
    "ErrorImpersonateUserDenied": "The account does not have permission to impersonate the "
                                  "requested user.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorFolderExists": "A folder with the specified name already exists.",
    "ErrorIrresolvableConflict": "The send or update operation could not be performed because "
                                 "the change key passed in the request does not match the "
                                 "current change key for the item.",
    "ErrorUnsupportedQueryFilter": "The restriction or sort order is too complex for this "
                                   "operation.",
}


def _t(tag: str) -> str:
    return f"{{{T}}}{tag}"


def _m(tag: str) -> str:
    return f"{{{M}}}{tag}"


@dataclass(frozen=True)
class Address:
    email: str
    name: str | None = None


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str | None
    data: bytes


@dataclass
class SentMessage:
    """One CreateItem message as the peer understood it."""

    disposition: str  # SendOnly | SendAndSaveCopy
    saved_to: str | None  # the SavedItemFolderId's distinguished id (sentitems), or None
    mailbox: str | None  # X-AnchorMailbox: whose mailbox sent it
    impersonated: str | None  # ExchangeImpersonation's PrimarySmtpAddress
    subject: str | None
    body: str | None
    body_type: str | None  # HTML | Text
    author: Address | None
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    reply_to: list[Address]
    attachments: list[Attachment]
    internet_message_id: str | None
    in_reply_to: str | None
    references: str | None

    @property
    def recipients(self) -> list[str]:
        return [a.email for a in (*self.to, *self.cc, *self.bcc)]


@dataclass
class Request:
    """One POST as received: what the audit-minded tests look at."""

    operation: str | None
    auth: str | None  # basic | bearer | None
    status: int
    headers: dict[str, str]


@dataclass
class _Fault:
    operation: str
    kind: str  # busy | http503 | error | http
    code: str = ""
    back_off_ms: int | None = None
    retry_after: str | None = None
    status: int = 500


@dataclass
class _State:
    user: str | None
    password: str | None
    tokens: set[str]
    delay: float = 0.0
    impersonation_allowed: bool = True
    unknown_recipients: set[str] = field(default_factory=set)
    faults: deque[_Fault] = field(default_factory=deque)
    sent: list[SentMessage] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    mailbox: Mailbox = field(default_factory=lambda: Mailbox())


@dataclass
class StoredItem:
    """One message in the peer's mailbox."""

    item_id: str
    mime: bytes
    received: datetime
    is_read: bool = False
    version: int = 1  # bumped on every change: the ChangeKey

    @property
    def changekey(self) -> str:
        return base64.b64encode(f"CQAAABYAAAA{self.version:08d}".encode()).decode()

    @property
    def message_id(self) -> str | None:
        value = email.message_from_bytes(self.mime)["Message-ID"]
        return str(value).strip() if value else None


@dataclass
class StoredFolder:
    folder_id: str
    name: str
    parent_id: str | None
    folder_class: str = "IPF.Note"
    distinguished: str | None = None
    items: dict[str, StoredItem] = field(default_factory=dict)  # in arrival order


def _new_id(prefix: str = "AAMkAD") -> str:
    # Exchange ids are long base64 strings; a new one for every item and every move.
    return prefix + base64.b64encode(os.urandom(48)).decode()


class Mailbox:
    """The folders and messages the fetcher sees; distinguished folders exist from the start."""

    def __init__(self) -> None:
        self.folders: dict[str, StoredFolder] = {}
        for name, (folder_class, display) in _FOLDER_NAMES.items():
            parent = None if name == "root" else "F-root" if name == "msgfolderroot" \
                else "F-msgfolderroot"
            self.folders["F-" + name] = StoredFolder("F-" + name, display, parent,
                                                     folder_class, name)
        self._clock = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

    def folder(self, ref: ET.Element) -> StoredFolder | None:
        """The folder a ``t:FolderId`` or ``t:DistinguishedFolderId`` element names."""
        if ref.tag == _t("DistinguishedFolderId"):
            return self.folders.get("F-" + ref.get("Id", ""))
        return self.folders.get(ref.get("Id", ""))

    def by_name(self, name: str, parent: str | None = None) -> StoredFolder | None:
        """A folder by display name (any case, as Exchange compares), below ``parent``
        (a FolderId) or anywhere."""
        return next((f for f in self.folders.values()
                     if parent in (None, f.parent_id) and f.name.lower() == name.lower()), None)

    def find_item(self, item_id: str) -> tuple[StoredFolder, StoredItem] | None:
        for folder in self.folders.values():
            item = folder.items.get(item_id)
            if item is not None:
                return folder, item
        return None

    def deliver(self, raw: bytes, folder: str = "inbox", *, read: bool = False,
                received: datetime | None = None) -> str:
        target = self.folders.get("F-" + folder) or self.by_name(folder)
        if target is None:
            raise KeyError(f"no folder {folder}")
        self._clock += timedelta(seconds=1)
        item = StoredItem(_new_id(), raw, received or self._clock, read)
        target.items[item.item_id] = item
        return item.item_id


class EwsPeer:
    """An EWS server on 127.0.0.1 with a trustme certificate; see the module doc."""

    def __init__(self, certs: PeerCerts, *, user: str | None = "desk-sender",
                 password: str | None = None, tokens: set[str] | None = None,
                 delay: float = 0.0) -> None:
        self.certs = certs
        self.state = _State(user, password, set(tokens or ()), delay)
        self.state.gate.set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> EwsPeer:
        server = ThreadingHTTPServer((HOST, 0), _handler(self.state))
        server.daemon_threads = True
        context = self.certs.server_context()
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ews-peer",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.state.gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> EwsPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}{PATH}"

    # -- what the tests script and read ------------------------------------------

    @property
    def sent(self) -> list[SentMessage]:
        with self.state.lock:
            return list(self.state.sent)

    @property
    def requests(self) -> list[Request]:
        with self.state.lock:
            return list(self.state.requests)

    def operations(self) -> list[str | None]:
        return [r.operation for r in self.requests]

    def fail_next(self, operation: str, kind: str, code: str = "", *,
                  back_off_ms: int | None = None, retry_after: str | None = None,
                  status: int = 500, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``operation`` with a fault instead.

        ``kind``: ``busy`` (ErrorServerBusy SOAP fault, optional BackOffMilliseconds),
        ``http503`` (optional Retry-After), ``error`` (a ResponseMessage with
        ResponseClass="Error" and ResponseCode ``code``), ``fault`` (a SOAP fault
        with ResponseCode ``code``), ``http`` (a bare HTTP ``status``).
        """
        with self.state.lock:
            for _ in range(times):
                self.state.faults.append(_Fault(operation, kind, code, back_off_ms,
                                                retry_after, status))

    def refuse(self, *addresses: str) -> None:
        """Treat these addresses as unknown: CreateItem fails with ErrorInvalidRecipients."""
        self.state.unknown_recipients |= {a.lower() for a in addresses}

    def deny_impersonation(self) -> None:
        self.state.impersonation_allowed = False

    @property
    def mailbox(self) -> Mailbox:
        return self.state.mailbox

    def deliver(self, raw: bytes, folder: str = "inbox", *, read: bool = False,
                received: datetime | None = None) -> str:
        """Put a message (RFC 5322 bytes) into a folder (distinguished id or display name
        below the top of the store); its ItemId."""
        with self.state.lock:
            return self.state.mailbox.deliver(raw, folder, read=read, received=received)

    def add_folder(self, name: str, parent: str = "msgfolderroot") -> str:
        """Create a folder by hand (as a user would in Outlook); its FolderId."""
        with self.state.lock:
            box = self.state.mailbox
            above = box.folders.get("F-" + parent) or box.by_name(parent)
            assert above is not None, parent
            folder = StoredFolder(_new_id("AAMkAF"), name, above.folder_id)
            box.folders[folder.folder_id] = folder
            return folder.folder_id

    def incoming(self, name: str = "ews-in", /, **spec: Any) -> IncomingServer:
        """The IncomingServer resource that fetches from this peer's mailbox."""
        return ews_incoming(self.url, name, **spec)

    def items(self, folder: str = "inbox") -> list[StoredItem]:
        """The messages of a folder, oldest first ([] when the folder does not exist)."""
        with self.state.lock:
            box = self.state.mailbox
            found = box.folders.get("F-" + folder) or box.by_name(folder)
            return sorted(found.items.values(), key=lambda i: i.received) if found else []

    @contextlib.contextmanager
    def hold(self) -> Iterator[threading.Event]:
        """Keep CreateItem requests waiting until the yielded event is set (or the block ends)."""
        self.state.arrived.clear()
        self.state.gate.clear()
        try:
            yield self.state.gate
        finally:
            self.state.gate.set()

    @property
    def arrived(self) -> threading.Event:
        return self.state.arrived

    def server(self, name: str = "ews", /, **spec: Any) -> OutgoingServer:
        """The OutgoingServer resource that sends through this peer."""
        return ews_server(self.port, name, **spec)


def ews_server(port: int, name: str = "ews", /, **spec: Any) -> OutgoingServer:
    """An EWS OutgoingServer at https://localhost:``port``; also for ports nobody serves."""
    body: dict[str, Any] = {
        "email": "helpdesk@desk.example",
        "senderName": "IT Help Desk",
        "replyTo": "support@desk.example",
        "protocol": "ews",
        "host": "localhost",
        "port": port,
        "ewsUrl": f"https://localhost:{port}{PATH}",
        "primary": True,
        "timeoutSeconds": 10,
        "attachmentLimitMB": 20,
        "maxConcurrency": 2,
    }
    body.update(spec)
    return outgoing_server(name, body)


def ews_incoming(url: str, name: str = "ews-in", /, **spec: Any) -> IncomingServer:
    """An EWS IncomingServer fetching from ``url``; also for URLs nobody serves."""
    body: dict[str, Any] = {"email": "desk@corp.example", "protocol": "ews",
                            "host": "localhost", "ewsUrl": url}
    body.update(spec)
    return IncomingServer.model_validate({
        "apiVersion": "reconciler.dev/v1", "kind": "IncomingServer",
        "metadata": {"name": name, "namespace": "default"}, "spec": body})


# -- the HTTP side ---------------------------------------------------------------------


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: exchangelib reuses its sessions
        # Headers and body leave in two writes; with Nagle on, the client's delayed ACK
        # would hold every answer back ~40 ms on a kept-alive connection.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path.split("?")[0].lower() != PATH.lower():
                self._reply(404, b"Not Found", "text/plain", None)
                return
            auth = self._authenticated()
            operation, envelope = _parse(body)
            if auth is None:
                # What an anonymous probe for the auth type sees, and a wrong password too.
                challenges = []
                if state.password is not None:
                    challenges.append('Basic realm="localhost"')
                if state.tokens:
                    challenges.append('Bearer error="invalid_token"')
                self._reply(401, b"", "text/html", operation,
                            {"WWW-Authenticate": ", ".join(challenges) or "Basic"})
                return
            if state.delay:
                threading.Event().wait(state.delay)
            fault = _take_fault(state, operation)
            if fault is not None and fault.kind in ("http503", "http"):
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                status = 503 if fault.kind == "http503" else fault.status
                self._reply(status, b"Service Unavailable" if status == 503 else b"Error",
                            "text/plain", operation, headers)
                return
            status, xml = _answer(state, operation, envelope, dict(self.headers), fault)
            self._reply(status, xml.encode(), "text/xml; charset=utf-8", operation, auth=auth)

        def _authenticated(self) -> str | None:
            header = self.headers.get("Authorization") or ""
            scheme, _, value = header.partition(" ")
            if scheme.lower() == "basic" and state.password is not None:
                try:
                    user, _, password = base64.b64decode(value).decode().partition(":")
                except ValueError:
                    return None
                if user == state.user and password == state.password:
                    return "basic"
            if scheme.lower() == "bearer" and value.strip() in state.tokens:
                return "bearer"
            return None

        def _reply(self, status: int, payload: bytes, content_type: str,
                   operation: str | None, headers: dict[str, str] | None = None,
                   auth: str | None = None) -> None:
            with state.lock:
                state.requests.append(Request(operation, auth, status, dict(self.headers)))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def _take_fault(state: _State, operation: str | None) -> _Fault | None:
    with state.lock:
        for fault in state.faults:
            if fault.operation == operation:
                state.faults.remove(fault)
                return fault
    return None


def _parse(body: bytes) -> tuple[str | None, ET.Element | None]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None, None
    soap_body = root.find(f"{{{SOAP}}}Body")
    if soap_body is None or len(soap_body) == 0:
        return None, root
    return soap_body[0].tag.rpartition("}")[2], root


# -- the SOAP side ---------------------------------------------------------------------

Handler = Callable[[_State, ET.Element, ET.Element, dict[str, str]], str]


def _answer(state: _State, operation: str | None, envelope: ET.Element | None,
            headers: dict[str, str], fault: _Fault | None) -> tuple[int, str]:
    if envelope is None or operation is None:
        return 500, _soap_fault("ErrorSchemaValidation", "The request is not valid SOAP.")
    impersonated = envelope.find(f"{{{SOAP}}}Header/{_t('ExchangeImpersonation')}")
    if impersonated is not None and not state.impersonation_allowed:
        code = "ErrorImpersonateUserDenied"
        return 500, _soap_fault(code, _MESSAGES[code])
    if fault is not None:
        if fault.kind == "busy":
            return 500, _soap_fault("ErrorServerBusy", _MESSAGES["ErrorServerBusy"],
                                    fault.back_off_ms)
        if fault.kind == "fault":
            return 500, _soap_fault(fault.code, _MESSAGES.get(fault.code, fault.code))
        return 200, _envelope(_error_response(operation, fault.code))
    handler = _OPERATIONS.get(operation)
    if handler is None:
        return 500, _soap_fault("ErrorInvalidRequest", f"The request is invalid: {operation} "
                                "is not supported by this test server.")
    request = envelope.find(f"{{{SOAP}}}Body")[0]  # type: ignore[index]
    return 200, _envelope(handler(state, request, envelope, headers))


def _envelope(body: str) -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?><s:Envelope {_NS}><s:Header>{_VERSION}'
            f"</s:Header><s:Body>{body}</s:Body></s:Envelope>")


def _soap_fault(code: str, message: str, back_off_ms: int | None = None) -> str:
    extra = ""
    if back_off_ms is not None:
        extra = (f'<t:MessageXml xmlns:t="{T}"><t:Value Name="BackOffMilliseconds">'
                 f"{back_off_ms}</t:Value></t:MessageXml>")
    return (f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}"><s:Body>'
            f'<s:Fault><faultcode xmlns:a="{T}">a:{code}</faultcode>'
            f'<faultstring xml:lang="en-US">{escape(message)}</faultstring><detail>'
            f'<e:ResponseCode xmlns:e="{E}">{code}</e:ResponseCode>'
            f'<e:Message xmlns:e="{E}">{escape(message)}</e:Message>{extra}</detail>'
            "</s:Fault></s:Body></s:Envelope>")


def _error_response(operation: str, code: str, inner: str = "") -> str:
    message = _MESSAGES.get(code, code)
    return (f'<m:{operation}Response><m:ResponseMessages><m:{operation}ResponseMessage '
            f'ResponseClass="Error"><m:MessageText>{escape(message)}</m:MessageText>'
            f"<m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0"
            f"</m:DescriptiveLinkKey>{inner}</m:{operation}ResponseMessage></m:ResponseMessages>"
            f"</m:{operation}Response>")


def _success(operation: str, inner: str) -> str:
    return (f"<m:{operation}Response><m:ResponseMessages><m:{operation}ResponseMessage "
            f'ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>{inner}'
            f"</m:{operation}ResponseMessage></m:ResponseMessages></m:{operation}Response>")


def _convert_id(state: _State, request: ET.Element, envelope: ET.Element,
                headers: dict[str, str]) -> str:
    # exchangelib's version probe converts the id "DUMMY"; Exchange calls it malformed and
    # still sends ServerVersionInfo, which is all the probe wants.
    return _error_response("ConvertId", "ErrorInvalidIdMalformed")


def _get_folder(state: _State, request: ET.Element, envelope: ET.Element,
                headers: dict[str, str]) -> str:
    messages = []
    ids = request.find(_m("FolderIds"))
    with state.lock:
        box = state.mailbox
        for ref in list(ids) if ids is not None else []:
            folder = box.folder(ref)
            if folder is None:
                messages.append('<m:GetFolderResponseMessage ResponseClass="Error">'
                                "<m:MessageText>The specified folder could not be found in the "
                                "store.</m:MessageText><m:ResponseCode>ErrorFolderNotFound"
                                "</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>"
                                "<m:Folders/></m:GetFolderResponseMessage>")
                continue
            messages.append('<m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>'
                            f"NoError</m:ResponseCode><m:Folders>{_folder_xml(box, folder)}"
                            "</m:Folders></m:GetFolderResponseMessage>")
    return f"<m:GetFolderResponse><m:ResponseMessages>{''.join(messages)}</m:ResponseMessages>" \
           "</m:GetFolderResponse>"


def _folder_xml(box: Mailbox, folder: StoredFolder) -> str:
    klass = f"<t:FolderClass>{folder.folder_class}</t:FolderClass>" if folder.folder_class \
        else ""
    children = sum(1 for f in box.folders.values() if f.parent_id == folder.folder_id)
    unread = sum(1 for i in folder.items.values() if not i.is_read)
    return (f'<t:Folder><t:FolderId Id={quoteattr(folder.folder_id)} ChangeKey="AQAAABYAAAA"/>'
            f'<t:ParentFolderId Id={quoteattr(folder.parent_id or "F-root")} '
            f'ChangeKey="AQAAAA=="/>{klass}<t:DisplayName>{escape(folder.name)}</t:DisplayName>'
            f"<t:TotalCount>{len(folder.items)}</t:TotalCount><t:ChildFolderCount>{children}"
            f"</t:ChildFolderCount><t:UnreadCount>{unread}</t:UnreadCount></t:Folder>")


def _resolve_names(state: _State, request: ET.Element, envelope: ET.Element,
                   headers: dict[str, str]) -> str:
    entry = request.findtext(_m("UnresolvedEntry")) or ""
    if entry.lower() in state.unknown_recipients or "@" not in entry:
        return _error_response("ResolveNames", "ErrorNameResolutionNoResults")
    return _success("ResolveNames", '<m:ResolutionSet TotalItemsInView="1" '
                    'IncludesLastItemInRange="true"><t:Resolution><t:Mailbox>'
                    f"<t:Name>{escape(entry)}</t:Name><t:EmailAddress>{escape(entry)}"
                    "</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType><t:MailboxType>Mailbox"
                    "</t:MailboxType></t:Mailbox></t:Resolution></m:ResolutionSet>")


def _create_item(state: _State, request: ET.Element, envelope: ET.Element,
                 headers: dict[str, str]) -> str:
    disposition = request.get("MessageDisposition", "")
    saved = request.find(f"{_m('SavedItemFolderId')}/{_t('DistinguishedFolderId')}")
    saved_id = request.find(f"{_m('SavedItemFolderId')}/{_t('FolderId')}")
    saved_to = (saved.get("Id") if saved is not None
                else (saved_id.get("Id", "").removeprefix("F-") if saved_id is not None else None))
    impersonation = envelope.find(f"{{{SOAP}}}Header/{_t('ExchangeImpersonation')}")
    messages = []
    for item in request.iter(_t("Message")):
        sent = _message(item, disposition, saved_to, headers.get("X-AnchorMailbox"),
                        impersonation.findtext(f".//{_t('PrimarySmtpAddress')}")
                        if impersonation is not None else None)
        if not sent.recipients or any(a.lower() in state.unknown_recipients
                                      for a in sent.recipients):
            messages.append(_error_response("CreateItem", "ErrorInvalidRecipients",
                                            "<m:Items/>"))
            continue
        state.arrived.set()
        state.gate.wait(30)
        with state.lock:
            state.sent.append(sent)
        messages.append(_success("CreateItem", "<m:Items/>"))
    if len(messages) == 1:
        return messages[0]
    inner = "".join(m.split("<m:ResponseMessages>")[1].split("</m:ResponseMessages>")[0]
                    for m in messages)
    return f"<m:CreateItemResponse><m:ResponseMessages>{inner}</m:ResponseMessages>" \
           "</m:CreateItemResponse>"


def _message(item: ET.Element, disposition: str, saved_to: str | None, anchor: str | None,
             impersonated: str | None) -> SentMessage:
    body = item.find(_t("Body"))
    author = _mailboxes(item, "From")
    return SentMessage(
        disposition=disposition,
        saved_to=saved_to,
        mailbox=anchor,
        impersonated=impersonated,
        subject=item.findtext(_t("Subject")),
        body=body.text if body is not None else None,
        body_type=body.get("BodyType") if body is not None else None,
        author=author[0] if author else None,
        to=_mailboxes(item, "ToRecipients"),
        cc=_mailboxes(item, "CcRecipients"),
        bcc=_mailboxes(item, "BccRecipients"),
        reply_to=_mailboxes(item, "ReplyTo"),
        attachments=[
            Attachment(a.findtext(_t("Name")) or "", a.findtext(_t("ContentType")),
                       base64.b64decode(a.findtext(_t("Content")) or ""))
            for a in item.iter(_t("FileAttachment"))
        ],
        internet_message_id=item.findtext(_t("InternetMessageId")),
        in_reply_to=item.findtext(_t("InReplyTo")),
        references=item.findtext(_t("References")),
    )


def _mailboxes(item: ET.Element, container: str) -> list[Address]:
    found = item.find(_t(container))
    if found is None:
        return []
    return [Address(m.findtext(_t("EmailAddress")) or "", m.findtext(_t("Name")))
            for m in found.iter(_t("Mailbox"))]


# -- the mailbox operations (incoming mail) ------------------------------------------------


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item_ref(item: StoredItem) -> str:
    return f"<t:ItemId Id={quoteattr(item.item_id)} ChangeKey={quoteattr(item.changekey)}/>"


def _restricted(request: ET.Element) -> Callable[[StoredItem], bool] | str:
    """The items a FindItem restriction selects; an error code for what we do not model."""
    restriction = request.find(_m("Restriction"))
    if restriction is None or len(restriction) == 0:
        return lambda item: True
    test = restriction[0]
    uri = test.find(_t("FieldURI"))
    constant = test.find(f"{_t('FieldURIOrConstant')}/{_t('Constant')}")
    if test.tag != _t("IsEqualTo") or uri is None or constant is None \
            or uri.get("FieldURI") != "message:IsRead":
        return "ErrorUnsupportedQueryFilter"
    wanted = constant.get("Value", "").lower() in ("1", "true")
    return lambda item: item.is_read == wanted


def _find_item(state: _State, request: ET.Element, envelope: ET.Element,
               headers: dict[str, str]) -> str:
    view = request.find(_m("IndexedPageItemView"))
    offset = int(view.get("Offset", "0")) if view is not None else 0
    size = int(view.get("MaxEntriesReturned", "1000")) if view is not None else 1000
    wants = {f.get("FieldURI") for f in request.iter(_t("FieldURI"))
             if f.get("FieldURI") != "message:IsRead"}
    selected = _restricted(request)
    if isinstance(selected, str):
        return _error_response("FindItem", selected)
    order = request.find(f"{_m('SortOrder')}/{_t('FieldOrder')}")
    newest_first = order is not None and order.get("Order") == "Descending"
    parents = request.find(_m("ParentFolderIds"))
    with state.lock:
        folder = state.mailbox.folder(parents[0]) if parents is not None and len(parents) \
            else None
        if folder is None:
            return _error_response("FindItem", "ErrorFolderNotFound",
                                   '<m:RootFolder TotalItemsInView="0"/>')
        matching = sorted((i for i in folder.items.values() if selected(i)),
                          key=lambda i: i.received, reverse=newest_first)
        page = matching[offset:offset + size]
        rows = []
        for item in page:
            extra = ""
            if "item:DateTimeReceived" in wants:
                extra += f"<t:DateTimeReceived>{_when(item.received)}</t:DateTimeReceived>"
            if "message:IsRead" in wants:
                extra += f"<t:IsRead>{str(item.is_read).lower()}</t:IsRead>"
            rows.append(f"<t:Message>{_item_ref(item)}{extra}</t:Message>")
    last = offset + len(page) >= len(matching)
    return _success("FindItem", f'<m:RootFolder IndexedPagingOffset="{offset + len(page)}" '
                    f'TotalItemsInView="{len(matching)}" IncludesLastItemInRange='
                    f'"{str(last).lower()}"><t:Items>{"".join(rows)}</t:Items></m:RootFolder>')


def _gone(operation: str) -> str:
    return (f'<m:{operation}ResponseMessage ResponseClass="Error"><m:MessageText>The '
            "specified object was not found in the store., The process failed to get the "
            "correct properties.</m:MessageText><m:ResponseCode>ErrorItemNotFound"
            "</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:Items/>"
            f"</m:{operation}ResponseMessage>")


def _messages(operation: str, parts: list[str]) -> str:
    return (f"<m:{operation}Response><m:ResponseMessages>{''.join(parts)}"
            f"</m:ResponseMessages></m:{operation}Response>")


def _ok(operation: str, inner: str) -> str:
    return (f'<m:{operation}ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
            f"</m:ResponseCode>{inner}</m:{operation}ResponseMessage>")


def _get_item(state: _State, request: ET.Element, envelope: ET.Element,
              headers: dict[str, str]) -> str:
    fields = {f.get("FieldURI") for f in request.iter(_t("FieldURI"))}
    parts = []
    with state.lock:
        for ref in request.iter(_t("ItemId")):
            found = state.mailbox.find_item(ref.get("Id", ""))
            if found is None:
                parts.append(_gone("GetItem"))
                continue
            item = found[1]
            mime = ""
            if "item:MimeContent" in fields:
                mime = ('<t:MimeContent CharacterSet="UTF-8">'
                        f"{base64.b64encode(item.mime).decode()}</t:MimeContent>")
            parts.append(_ok("GetItem", f"<m:Items><t:Message>{mime}{_item_ref(item)}"
                                        "</t:Message></m:Items>"))
    return _messages("GetItem", parts)


def _update_item(state: _State, request: ET.Element, envelope: ET.Element,
                 headers: dict[str, str]) -> str:
    overwrite = request.get("ConflictResolution") == "AlwaysOverwrite"
    parts = []
    with state.lock:
        for change in request.iter(_t("ItemChange")):
            ref = change.find(_t("ItemId"))
            found = state.mailbox.find_item(ref.get("Id", "")) if ref is not None else None
            if found is None or ref is None:
                parts.append(_gone("UpdateItem"))
                continue
            item = found[1]
            if ref.get("ChangeKey") and ref.get("ChangeKey") != item.changekey \
                    and not overwrite:
                parts.append(_error_response("UpdateItem", "ErrorIrresolvableConflict")
                             .split("<m:ResponseMessages>")[1]
                             .split("</m:ResponseMessages>")[0])
                continue
            for update in change.iter(_t("SetItemField")):
                value = update.findtext(f".//{_t('IsRead')}")
                uri = update.find(_t("FieldURI"))
                if uri is not None and uri.get("FieldURI") == "message:IsRead" \
                        and value is not None:
                    item.is_read = value.strip().lower() in ("true", "1")
            item.version += 1
            parts.append(_ok("UpdateItem", f"<m:Items><t:Message>{_item_ref(item)}</t:Message>"
                                           "</m:Items><m:ConflictResults><t:Count>0</t:Count>"
                                           "</m:ConflictResults>"))
    return _messages("UpdateItem", parts)


def _move_item(state: _State, request: ET.Element, envelope: ET.Element,
               headers: dict[str, str]) -> str:
    target_ref = request.find(_m("ToFolderId"))
    parts = []
    with state.lock:
        box = state.mailbox
        target = box.folder(target_ref[0]) if target_ref is not None and len(target_ref) \
            else None
        if target is None:
            return _error_response("MoveItem", "ErrorFolderNotFound", "<m:Items/>")
        for ref in request.iter(_t("ItemId")):
            found = box.find_item(ref.get("Id", ""))
            if found is None:
                parts.append(_gone("MoveItem"))
                continue
            source, item = found
            del source.items[item.item_id]
            item.item_id = _new_id()  # Exchange gives a moved item a new id
            item.version += 1
            target.items[item.item_id] = item
            parts.append(_ok("MoveItem", f"<m:Items><t:Message>{_item_ref(item)}</t:Message>"
                                         "</m:Items>"))
    return _messages("MoveItem", parts)


def _find_folder(state: _State, request: ET.Element, envelope: ET.Element,
                 headers: dict[str, str]) -> str:
    parents = request.find(_m("ParentFolderIds"))
    name = None
    restriction = request.find(_m("Restriction"))
    if restriction is not None:
        test = restriction.find(_t("IsEqualTo"))
        uri = test.find(_t("FieldURI")) if test is not None else None
        constant = test.find(f".//{_t('Constant')}") if test is not None else None
        if uri is None or uri.get("FieldURI") != "folder:DisplayName" or constant is None:
            return _error_response("FindFolder", "ErrorUnsupportedQueryFilter")
        name = constant.get("Value", "")
    with state.lock:
        box = state.mailbox
        parent = box.folder(parents[0]) if parents is not None and len(parents) else None
        if parent is None:
            return _error_response("FindFolder", "ErrorFolderNotFound")
        found = [f for f in box.folders.values() if f.parent_id == parent.folder_id
                 and (name is None or f.name.lower() == name.lower())]
        rows = "".join(_folder_xml(box, f) for f in found)
    return _success("FindFolder", f'<m:RootFolder IndexedPagingOffset="{len(found)}" '
                    f'TotalItemsInView="{len(found)}" IncludesLastItemInRange="true">'
                    f"<t:Folders>{rows}</t:Folders></m:RootFolder>")


def _create_folder(state: _State, request: ET.Element, envelope: ET.Element,
                   headers: dict[str, str]) -> str:
    parent_ref = request.find(_m("ParentFolderId"))
    parts = []
    with state.lock:
        box = state.mailbox
        parent = box.folder(parent_ref[0]) if parent_ref is not None and len(parent_ref) \
            else None
        if parent is None:
            return _error_response("CreateFolder", "ErrorFolderNotFound", "<m:Folders/>")
        for spec in request.iter(_t("Folder")):
            name = spec.findtext(_t("DisplayName")) or ""
            if box.by_name(name, parent.folder_id) is not None:
                parts.append(_error_response("CreateFolder", "ErrorFolderExists", "<m:Folders/>")
                             .split("<m:ResponseMessages>")[1]
                             .split("</m:ResponseMessages>")[0])
                continue
            folder = StoredFolder(_new_id("AAMkAF"), name, parent.folder_id,
                                  spec.findtext(_t("FolderClass")) or "IPF.Note")
            box.folders[folder.folder_id] = folder
            parts.append(_ok("CreateFolder", f"<m:Folders><t:Folder><t:FolderId Id="
                                             f'{quoteattr(folder.folder_id)} ChangeKey="AQAAAA=="/>'
                                             "</t:Folder></m:Folders>"))
    return _messages("CreateFolder", parts)


# One handler per EWS operation.
_OPERATIONS: dict[str, Handler] = {
    "ConvertId": _convert_id,
    "GetFolder": _get_folder,
    "ResolveNames": _resolve_names,
    "CreateItem": _create_item,
    "FindItem": _find_item,
    "GetItem": _get_item,
    "UpdateItem": _update_item,
    "MoveItem": _move_item,
    "FindFolder": _find_folder,
    "CreateFolder": _create_folder,
}


@contextlib.contextmanager
def running(*peers: EwsPeer) -> Iterator[tuple[EwsPeer, ...]]:
    for peer in peers:
        peer.start()
    try:
        yield peers
    finally:
        for peer in peers:
            peer.stop()
