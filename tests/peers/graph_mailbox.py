"""The mailbox side of the local Microsoft Graph (tests/peers/graph_server.py): what the
incoming-mail fetcher lists, downloads, flags and moves, in Graph's wire format.

Mounted into :class:`peers.graph_server.GraphPeer` (``peer.store``), behind the same
bearer-token check, mailbox lookup, scripted faults (``fail_next``) and concurrency limit
as the sending endpoints:

- ``GET /v1.0/users/{m}/mailFolders`` and ``.../mailFolders/{f}/childFolders`` with
  ``$filter=displayName eq '...'`` (``value`` list with ``@odata.context``);
  ``GET .../mailFolders/{f}``; ``POST .../mailFolders`` (201, or 409
  ``ErrorFolderExists``). ``{f}`` is a folder id or a well-known name (``inbox``, ...).
- ``GET .../mailFolders/{f}/messages`` with ``$filter`` (``isRead eq ...`` and
  ``receivedDateTime ge ...``), ``$orderby=receivedDateTime [asc|desc]``, ``$select``,
  ``$top`` (default 10, as Graph) and ``$skip``; ``@odata.nextLink`` is the full URL of
  the next page. As Graph does, an ``$orderby`` property that is not the first one in
  ``$filter`` is refused with 400 ``InefficientFilter``.
- ``GET .../messages/{id}/$value`` (the MIME message), ``PATCH .../messages/{id}``
  (``isRead``), ``POST .../messages/{id}/move`` (201; the moved message gets a new id,
  as Graph's default ids do). Unknown ids are 404 ``ErrorItemNotFound``.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from peers.graph_server import GraphPeer

WELL_KNOWN = {
    "msgfolderroot": "Top of Information Store", "inbox": "Inbox", "sentitems": "Sent Items",
    "drafts": "Drafts", "deleteditems": "Deleted Items", "archive": "Archive",
    "junkemail": "Junk Email",
}
_NOT_FOUND = "The specified object was not found in the store."


def _new_id() -> str:
    # Graph ids are long URL-safe base64 strings.
    return "AAMkAGI2" + base64.urlsafe_b64encode(os.urandom(48)).decode()


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StoredMessage:
    id: str
    mime: bytes
    received: datetime
    folder_id: str
    is_read: bool = False
    change: int = 1

    @property
    def internet_message_id(self) -> str | None:
        for line in self.mime.split(b"\r\n\r\n", 1)[0].splitlines():
            if line.lower().startswith(b"message-id:"):
                return line.split(b":", 1)[1].strip().decode(errors="replace")
        return None

    def json(self, select: set[str] | None) -> dict[str, Any]:
        full = {"id": self.id, "receivedDateTime": _iso(self.received),
                "internetMessageId": self.internet_message_id, "isRead": self.is_read,
                "parentFolderId": self.folder_id}
        shown = {k: v for k, v in full.items() if select is None or k in select or k == "id"}
        return {"@odata.etag": f'W/"CQAAABYAAAD{self.change:08d}"', **shown}


@dataclass
class StoredFolder:
    id: str
    name: str
    parent_id: str | None
    well_known: str | None = None

    def json(self, box: _Box) -> dict[str, Any]:
        items = [m for m in box.messages.values() if m.folder_id == self.id]
        return {"id": self.id, "displayName": self.name, "parentFolderId": self.parent_id,
                "childFolderCount": sum(1 for f in box.folders.values()
                                        if f.parent_id == self.id),
                "unreadItemCount": sum(1 for m in items if not m.is_read),
                "totalItemCount": len(items), "isHidden": False}


@dataclass
class _Box:
    folders: dict[str, StoredFolder] = field(default_factory=dict)
    messages: dict[str, StoredMessage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        root = StoredFolder(_new_id(), WELL_KNOWN["msgfolderroot"], None, "msgfolderroot")
        self.folders[root.id] = root
        for name, display in WELL_KNOWN.items():
            if name != "msgfolderroot":
                folder = StoredFolder(_new_id(), display, root.id, name)
                self.folders[folder.id] = folder

    def folder(self, ref: str) -> StoredFolder | None:
        found = self.folders.get(ref)
        if found is not None:
            return found
        return next((f for f in self.folders.values()
                     if f.well_known is not None and f.well_known == ref.lower()), None)

    def by_name(self, name: str, parent: str | None = None) -> StoredFolder | None:
        return next((f for f in self.folders.values()
                     if (parent is None or f.parent_id == parent)
                     and f.name.lower() == name.lower()), None)


def _error(status: int, code: str, message: str) -> Response:
    from peers.graph_server import graph_error

    return graph_error(status, code, message)


class MailStore:
    """Every mailbox's folders and messages; created empty (well-known folders only) on
    first use. Tests seed it with :meth:`deliver` and read it with :meth:`messages`."""

    def __init__(self) -> None:
        self._boxes: dict[str, _Box] = {}
        self._lock = threading.Lock()
        self._clock = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

    def _box(self, mailbox: str) -> _Box:
        return self._boxes.setdefault(mailbox.lower(), _Box())

    def _find(self, box: _Box, folder: str) -> StoredFolder:
        found = box.folder(folder) or box.by_name(folder)
        if found is None:
            raise KeyError(f"no folder {folder}")
        return found

    # -- the test's side -------------------------------------------------------------------

    def deliver(self, mailbox: str, raw: bytes, folder: str = "inbox", *,
                read: bool = False) -> str:
        """Put a message (RFC 5322 bytes) into a folder (well-known name, id or display
        name); its id. Each delivery arrives a second after the previous one."""
        with self._lock:
            box = self._box(mailbox)
            target = self._find(box, folder)
            self._clock += timedelta(seconds=1)
            message = StoredMessage(_new_id(), raw, self._clock, target.id, read)
            box.messages[message.id] = message
            return message.id

    def add_folder(self, mailbox: str, name: str, parent: str = "msgfolderroot") -> str:
        with self._lock:
            box = self._box(mailbox)
            folder = StoredFolder(_new_id(), name, self._find(box, parent).id)
            box.folders[folder.id] = folder
            return folder.id

    def messages(self, mailbox: str, folder: str = "inbox") -> list[StoredMessage]:
        """The messages of a folder, oldest first ([] when there is no such folder)."""
        with self._lock:
            box = self._box(mailbox)
            found = box.folder(folder) or box.by_name(folder)
            if found is None:
                return []
            return sorted((m for m in box.messages.values() if m.folder_id == found.id),
                          key=lambda m: m.received)

    # -- the routes ----------------------------------------------------------------------

    def routes(self, peer: GraphPeer) -> list[Route]:
        users = "/v1.0/users/{mailbox}"
        wrap = peer._mail  # authorisation, mailbox lookup, faults, concurrency

        def endpoint(handler: Any) -> Any:
            async def run(request: Request) -> Response:
                return await handler(peer, request)
            return wrap(run)

        return [
            Route(f"{users}/mailFolders", endpoint(self._list_folders), methods=["GET"]),
            Route(f"{users}/mailFolders", endpoint(self._create_folder), methods=["POST"]),
            Route(f"{users}/mailFolders/{{folder}}", endpoint(self._get_folder),
                  methods=["GET"]),
            Route(f"{users}/mailFolders/{{folder}}/childFolders",
                  endpoint(self._list_folders), methods=["GET"]),
            Route(f"{users}/mailFolders/{{folder}}/messages", endpoint(self._list_messages),
                  methods=["GET"]),
            Route(f"{users}/messages/{{id}}/$value", endpoint(self._mime), methods=["GET"]),
            Route(f"{users}/messages/{{id}}", endpoint(self._update), methods=["PATCH"]),
            Route(f"{users}/messages/{{id}}/move", endpoint(self._move), methods=["POST"]),
        ]

    async def _list_folders(self, peer: GraphPeer, request: Request) -> Response:
        mailbox = request.path_params["mailbox"]
        name: str | None = None
        query = request.query_params.get("$filter")
        if query:
            field_name, _, literal = query.partition(" eq ")
            if field_name.strip() != "displayName" or not literal.strip().startswith("'"):
                return _error(400, "BadRequest", f"Invalid filter clause: {query}")
            name = literal.strip()[1:-1].replace("''", "'")
        with self._lock:
            box = self._box(mailbox)
            ref = request.path_params.get("folder", "msgfolderroot")
            parent = box.folder(ref)
            if parent is None:
                return _error(404, "ErrorItemNotFound", _NOT_FOUND)
            rows = [f.json(box) for f in box.folders.values() if f.parent_id == parent.id
                    and (name is None or f.name.lower() == name.lower())]
        where = "mailFolders" if "folder" not in request.path_params else \
            f"mailFolders('{ref}')/childFolders"
        return JSONResponse({"@odata.context": f"{peer.endpoint}/v1.0/$metadata#users("
                                               f"'{quote(mailbox)}')/{where}",
                             "value": rows})

    async def _create_folder(self, peer: GraphPeer, request: Request) -> Response:
        try:
            name = str(json.loads(await request.body())["displayName"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "ErrorInvalidRequest", "displayName is missing.")
        with self._lock:
            box = self._box(request.path_params["mailbox"])
            root = box.folder("msgfolderroot")
            assert root is not None
            if box.by_name(name, root.id) is not None:
                return _error(409, "ErrorFolderExists",
                              "A folder with the specified name already exists.")
            folder = StoredFolder(_new_id(), name, root.id)
            box.folders[folder.id] = folder
            body = folder.json(box)
        return JSONResponse(body, status_code=201)

    async def _get_folder(self, peer: GraphPeer, request: Request) -> Response:
        with self._lock:
            box = self._box(request.path_params["mailbox"])
            folder = box.folder(request.path_params["folder"])
            if folder is None:
                return _error(404, "ErrorItemNotFound", _NOT_FOUND)
            return JSONResponse(folder.json(box))

    async def _list_messages(self, peer: GraphPeer, request: Request) -> Response:
        params = request.query_params
        try:
            top = int(params.get("$top", "10"))
            skip = int(params.get("$skip", "0"))
        except ValueError:
            return _error(400, "BadRequest", "$top and $skip must be integers.")
        clauses = [c.strip() for c in params.get("$filter", "").split(" and ") if c.strip()]
        order = params.get("$orderby", "").split()
        if order and (order[0] != "receivedDateTime" or not clauses
                      or not clauses[0].startswith(order[0] + " ")):
            return _error(400, "InefficientFilter",
                          "The restriction or sort order is too complex for this operation.")
        tests = []
        for clause in clauses:
            name, op, value = [*clause.split(" ", 2), "", ""][:3]
            if name == "isRead" and op == "eq" and value in ("true", "false"):
                tests.append(lambda m, v=value == "true": m.is_read == v)
            elif name == "receivedDateTime" and op == "ge":
                since = datetime.fromisoformat(value)
                tests.append(lambda m, s=since: m.received >= s)
            else:
                return _error(400, "BadRequest", f"Invalid filter clause: {clause}")
        select = set(params["$select"].split(",")) if "$select" in params else None
        mailbox = request.path_params["mailbox"]
        with self._lock:
            box = self._box(mailbox)
            folder = box.folder(request.path_params["folder"])
            if folder is None:
                return _error(404, "ErrorItemNotFound", _NOT_FOUND)
            chosen = sorted((m for m in box.messages.values()
                             if m.folder_id == folder.id and all(t(m) for t in tests)),
                            key=lambda m: m.received,
                            reverse=len(order) > 1 and order[1] == "desc")
            page = [m.json(select) for m in chosen[skip:skip + top]]
        body: dict[str, Any] = {
            "@odata.context": f"{peer.endpoint}/v1.0/$metadata#users('{quote(mailbox)}')/"
                              f"mailFolders('{request.path_params['folder']}')/messages",
            "value": page}
        if skip + top < len(chosen):
            query = {k: v for k, v in params.items()}
            query["$skip"] = str(skip + top)
            body["@odata.nextLink"] = f"{peer.endpoint}{request.url.path}?{urlencode(query)}"
        return JSONResponse(body)

    async def _mime(self, peer: GraphPeer, request: Request) -> Response:
        with self._lock:
            message = self._box(request.path_params["mailbox"]).messages.get(
                request.path_params["id"])
            if message is None:
                return _error(404, "ErrorItemNotFound", _NOT_FOUND)
            return Response(message.mime, media_type="text/plain")

    async def _update(self, peer: GraphPeer, request: Request) -> Response:
        try:
            changes = json.loads(await request.body())
        except ValueError:
            return _error(400, "ErrorInvalidRequest", "Cannot read the request body.")
        with self._lock:
            message = self._box(request.path_params["mailbox"]).messages.get(
                request.path_params["id"])
            if message is None:
                return _error(404, "ErrorItemNotFound", _NOT_FOUND)
            if "isRead" in changes:
                message.is_read = bool(changes["isRead"])
            message.change += 1
            return JSONResponse(message.json(None))

    async def _move(self, peer: GraphPeer, request: Request) -> Response:
        try:
            destination = str(json.loads(await request.body())["destinationId"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "ErrorInvalidRequest", "destinationId is missing.")
        with self._lock:
            box = self._box(request.path_params["mailbox"])
            message = box.messages.pop(request.path_params["id"], None)
            target = box.folder(destination)
            if message is None or target is None:
                if message is not None:
                    box.messages[message.id] = message
                return _error(404, "ErrorItemNotFound", _NOT_FOUND)
            message.id = _new_id()  # default (not immutable) ids change with the folder
            message.folder_id = target.id
            message.change += 1
            box.messages[message.id] = message
            return JSONResponse(message.json(None), status_code=201)
