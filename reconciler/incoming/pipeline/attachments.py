"""Attachment checks (SPEC I5): which files of an incoming mail the ticket may keep.

Inline parts included, each is stripped at the first problem, in this order:

1. damaged transfer encoding (a truncated download would reach the ticket corrupt);
2. a name with path separators, ``..``, control or reserved characters, a
   Windows device name, or over 255 bytes: how files escape the attachment
   folder or become unopenable (no name at all is fine: one is made up);
3. an extension blocked, or not allowed when an allow list is set
   (``MailSettings.incomingAttachments``);
4. content vs name: bytes with another kind of file's signature than the
   extension says (an executable called ``invoice.pdf``), or a declared type of
   another family (``image/png`` called ``notes.txt``); generic declared types
   (``application/octet-stream``) are not held against a file;
5. zero bytes;
6. above ``MailSettings.attachmentLimitMB`` (MiB).
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from reconciler.incoming.pipeline.context import MIB, AttachmentPolicy
from reconciler.incoming.pipeline.event import EventAttachment
from reconciler.incoming.pipeline.parse import RawAttachment


class AttachmentProblem(StrEnum):
    DAMAGED = "damaged"
    NAME = "invalid-name"
    EXTENSION = "blocked-extension"
    CONTENT_TYPE = "content-type-mismatch"
    EMPTY = "empty"
    SIZE = "too-large"


@dataclass(frozen=True, slots=True)
class Rejected:
    name: str
    content_type: str
    size: int
    problem: AttachmentProblem
    reason: str


# The built-in table only, not /etc/mime.types: the verdict must not depend on the machine.
_MIME = mimetypes.MimeTypes()
_BAD_NAME_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_WINDOWS_DEVICES = frozenset(
    ["con", "prn", "aux", "nul"] + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)])
_GENERIC_TYPES = frozenset({
    "application/octet-stream", "application/unknown", "application/x-unknown",
    "application/binary", "application/force-download", "binary/octet-stream",
})
# Leading bytes -> (what it is, extensions that may carry it).
_OFFICE_ZIP = frozenset({"zip", "docx", "xlsx", "pptx", "docm", "xlsm", "pptm", "odt", "ods",
                         "odp", "jar", "apk", "epub", "vsdx", "xps", "kmz"})
_SIGNATURES: tuple[tuple[bytes, str, frozenset[str]], ...] = (
    (b"%PDF-", "a PDF document", frozenset({"pdf", "ai"})),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", frozenset({"png"})),
    (b"\xff\xd8\xff", "a JPEG image", frozenset({"jpg", "jpeg", "jpe", "jfif"})),
    (b"GIF87a", "a GIF image", frozenset({"gif"})),
    (b"GIF89a", "a GIF image", frozenset({"gif"})),
    (b"PK\x03\x04", "a ZIP archive", _OFFICE_ZIP),
    (b"MZ", "a Windows executable", frozenset({"exe", "dll", "sys", "scr", "com", "cpl",
                                                "ocx", "drv", "efi", "msstyles"})),
    (b"\x7fELF", "a Linux executable", frozenset({"so", "elf", "bin", "o", "axf", "prx"})),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an OLE (old Office) file",
     frozenset({"doc", "xls", "ppt", "msi", "msg", "vsd", "pub", "dot", "xlt", "pps"})),
    (b"Rar!\x1a\x07", "a RAR archive", frozenset({"rar"})),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", frozenset({"7z"})),
    (b"\x1f\x8b", "a gzip archive", frozenset({"gz", "tgz", "svgz"})),
)
_EXECUTABLES = frozenset({"a Windows executable", "a Linux executable"})
# Benign formats whose signature is too short for the table above (a text file may start
# with "BM"): their fuller header proves the extension right whatever the declared type.
_PROVEN: dict[str, Callable[[bytes], bool]] = {
    "bmp": lambda d: d[:2] == b"BM" and d[6:10] == b"\0\0\0\0",
    "dib": lambda d: d[:2] == b"BM" and d[6:10] == b"\0\0\0\0",
}
# Types whose extension mimetypes does not know or guesses differently.
_SAME = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "text/x-csv": "text/csv",
         "application/x-pdf": "application/pdf", "message/rfc822": "message/rfc822"}


def extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.casefold() if dot and stem else ""


def name_problem(name: str) -> str | None:
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        return f"its name is {len(name)} characters long (at most 255 bytes are accepted)"
    bad = _BAD_NAME_CHARS.search(name)
    if bad:
        shown = repr(bad[0])[1:-1]
        return f"its name contains {shown!r}, which is not allowed in file names"
    if ".." in name:
        return "its name contains '..'"
    if name.strip(" .") != name or not name.strip(" ."):
        return "its name starts or ends with a dot or a space"
    if name.split(".")[0].casefold() in _WINDOWS_DEVICES:
        return "its name is a reserved device name on Windows"
    return None


def type_problem(name: str, declared: str, data: bytes) -> str | None:
    ext = extension(name)
    if not ext:
        return None
    for magic, what, extensions in _SIGNATURES:
        if data.startswith(magic) and ext not in extensions:
            return f"its content is {what} but its name ends in .{ext}"
    if _content_proves(ext, data):
        return None  # the bytes are what the name says: the label is the sender's mistake
    declared = _SAME.get(declared, declared)
    guessed = _MIME.guess_type(name, strict=False)[0]
    if declared in _GENERIC_TYPES or guessed is None or guessed in _GENERIC_TYPES:
        return None
    guessed = _SAME.get(guessed, guessed)
    if declared.partition("/")[0] != guessed.partition("/")[0]:
        return f"it is declared as {declared} but its name ends in .{ext} ({guessed})"
    return None


def _content_proves(ext: str, data: bytes) -> bool:
    """The content is a known benign kind of file that ``ext`` names."""
    if ext in _PROVEN:
        return _PROVEN[ext](data)
    return any(data.startswith(magic) and ext in extensions and what not in _EXECUTABLES
               for magic, what, extensions in _SIGNATURES)


def check(item: RawAttachment, policy: AttachmentPolicy, index: int) -> EventAttachment | Rejected:
    """Keep the attachment (with its sha256) or say why it is stripped."""
    name = item.name if item.name is not None else default_name(item.content_type, index)
    size = len(item.data)

    def reject(problem: AttachmentProblem, reason: str) -> Rejected:
        return Rejected(name, item.content_type, size, problem, reason)

    if item.damaged:
        return reject(AttachmentProblem.DAMAGED, item.damaged)
    bad_name = name_problem(name)
    if bad_name:
        return reject(AttachmentProblem.NAME, bad_name)
    ext = extension(name)
    if ext in policy.blocked:
        return reject(AttachmentProblem.EXTENSION, f"files ending in .{ext} are not accepted")
    if policy.allowed and ext not in policy.allowed:
        shown = f".{ext}" if ext else "without an extension"
        return reject(AttachmentProblem.EXTENSION,
                      f"files {shown} are not on the list of accepted extensions")
    bad_type = type_problem(name, item.content_type, item.data)
    if bad_type:
        return reject(AttachmentProblem.CONTENT_TYPE, bad_type)
    if size == 0:
        return reject(AttachmentProblem.EMPTY, "the file is empty")
    if size > policy.limit_bytes:
        return reject(AttachmentProblem.SIZE,
                      f"it is {size / MIB:.1f} MB, above the limit of "
                      f"{policy.limit_bytes / MIB:g} MB")
    digest = hashlib.sha256(item.data).hexdigest()
    return EventAttachment(name, item.content_type, size, digest, item.inline, item.content_id)


def default_name(content_type: str, index: int) -> str:
    ext = _MIME.guess_extension(content_type, strict=False) or ".bin"
    return f"attachment-{index}{ext}"
