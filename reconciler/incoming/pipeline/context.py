"""Everything the pipeline needs to judge one mail, compiled once per configuration.

Built when a server's configuration is loaded (or hot-swapped) and reused for
every mail fetched with it: nothing in it is re-derived per mail. Two lookups
come from the store:

- ``seen_message_id(message_id) -> bool``: was a mail with this Message-ID
  (angle brackets stripped) processed before?
- ``thread_lookup(message_ids) -> (module, number) | None``: the ticket any of
  these Message-IDs belongs to (the desk's notifications, earlier mails of a
  ticket), tried in the order given (In-Reply-To, then References newest first).
- ``sent_lookup(message_id) -> [AuditEntry]``: the SENT audit entries of a
  notification the desk sent with that Message-ID (a bounce is matched to them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from reconciler.config.models.base import Condition, MatchMode, Resource
from reconciler.config.models.email_command import EmailCommand, ResourceQuestion
from reconciler.config.models.incoming_email_rule import IncomingAction, IncomingEmailRule
from reconciler.config.models.incoming_server import IncomingServer
from reconciler.config.models.mail_settings import MailSettings, MailSettingsSpec
from reconciler.config.models.outgoing_server import OutgoingServer
from reconciler.config.models.recipient_filter import RecipientFilter
from reconciler.config.models.spam_filter import SpamFilter
from reconciler.incoming.pipeline.directory import SenderDirectory, directory_for
from reconciler.runtime.addresses import AddressList
from reconciler.state.base import AuditEntry

SeenLookup = Callable[[str], bool]
ThreadLookup = Callable[[Sequence[str]], "tuple[str, str] | None"]
SentLookup = Callable[[str], "list[AuditEntry]"]

MIB = 1024 * 1024
R = TypeVar("R", bound=Resource)


def _never_seen(_message_id: str) -> bool:
    return False


def _no_thread(_message_ids: Sequence[str]) -> tuple[str, str] | None:
    return None


def _nothing_sent(_message_id: str) -> list[AuditEntry]:
    return []


@dataclass(frozen=True, slots=True)
class ConditionSet:
    """A named group of conditions combined with ALL or ANY (spam filters, rules)."""

    name: str
    match: MatchMode
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class CompiledRule(ConditionSet):
    action: IncomingAction
    set_fields: tuple[tuple[str, str], ...]
    stop_processing: bool


@dataclass(frozen=True, slots=True)
class CompiledCommand:
    name: str
    subject_contains: str  # compared case-insensitively (casefolded here)
    pattern: re.Pattern[str]  # one `$Field=Value$` per match: groups name, value
    operations: frozenset[str]
    allowed_fields: frozenset[str]  # casefolded; empty means the known fields
    authorized_senders_only: bool
    # resource api key -> question api key -> question; empty: answers are not checked
    resources: Mapping[str, Mapping[str, ResourceQuestion]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestIdPattern:
    """Finds ``##RE-123##`` (and the bare ``##123##``) in subjects."""

    pattern: re.Pattern[str]  # groups: prefix (may be None), number
    modules: dict[str, str]  # PREFIX -> module
    default_module: str  # for a bare number

    def find(self, subject: str) -> tuple[tuple[str, str] | None, str | None]:
        """((module, number) of the first known reference, the first unknown-prefix text)."""
        unknown = None
        for m in self.pattern.finditer(subject):
            prefix = m["prefix"]
            number = m["number"].lstrip("0") or "0"
            if prefix is None:
                return (self.default_module, number), unknown
            module = self.modules.get(prefix.upper())
            if module is not None:
                return (module, number), unknown
            if unknown is None:
                unknown = m[0]
        return None, unknown


def request_id_pattern(settings: MailSettingsSpec) -> RequestIdPattern:
    d = re.escape(settings.base_delimiter)
    pattern = re.compile(rf"{d}(?:(?P<prefix>[A-Za-z]{{2,5}})-)?(?P<number>\d{{1,18}}){d}")
    modules = {prefix.upper(): module for module, prefix in settings.request_id_prefixes.items()}
    default = "request" if "request" in settings.request_id_prefixes or not modules \
        else next(iter(settings.request_id_prefixes))
    return RequestIdPattern(pattern, modules, default)


def command_pattern(delimiter: str) -> re.Pattern[str]:
    d = re.escape(delimiter)
    # The value may not contain the delimiter or a line break, so one malformed
    # command cannot swallow the rest of the body.
    return re.compile(
        rf"{d}[ \t]*(?P<name>[A-Za-z][A-Za-z0-9_ .]{{0,63}}?)[ \t]*=[ \t]*"
        rf"(?P<value>(?:(?!{d})[^\r\n])*?)[ \t]*{d}")


@dataclass(frozen=True)
class AttachmentPolicy:
    limit_bytes: int
    blocked: frozenset[str]  # extensions without dot, casefolded
    allowed: frozenset[str]  # empty: everything not blocked


@dataclass(frozen=True)
class PipelineContext:
    """One incoming server's configuration, compiled for the pipeline.

    ``mailboxes`` are the server's own addresses (``email`` + ``addresses``)
    that mail must be sent to; ``own_addresses`` every address the desk sends
    from, so its own acknowledgements are recognised.
    """

    server: IncomingServer
    settings: MailSettingsSpec
    mailboxes: frozenset[str]
    own_addresses: frozenset[str]
    sender_filter: AddressList | None
    spam_filters: tuple[ConditionSet, ...]
    rules: tuple[CompiledRule, ...]  # enabled, for this server, in evaluation order
    command: CompiledCommand | None
    request_ids: RequestIdPattern
    attachments: AttachmentPolicy
    creation_emails: frozenset[str]
    creation_domains: frozenset[str]
    defaults: tuple[tuple[str, str], ...]
    # None: no user list, every sender counts as a user (the daemon refuses to fetch
    # then unless guest tickets are on: require_directory)
    directory: SenderDirectory | None
    seen_message_id: SeenLookup = _never_seen
    thread_lookup: ThreadLookup = _no_thread
    sent_lookup: SentLookup = _nothing_sent

    @property
    def namespace(self) -> str:
        return self.server.metadata.namespace

    @property
    def server_name(self) -> str:
        return self.server.metadata.name

    @classmethod
    def from_resources(
        cls,
        server: IncomingServer,
        resources: Iterable[Resource],
        *,
        directory: SenderDirectory | None = None,
        seen_message_id: SeenLookup = _never_seen,
        thread_lookup: ThreadLookup = _no_thread,
        sent_lookup: SentLookup = _nothing_sent,
    ) -> PipelineContext:
        """Compile ``server``'s configuration from its namespace's ``resources``.

        A reference to a missing filter, spam filter or command raises
        LookupError: an allow list or spam filter silently dropped would let
        through mail the configuration meant to stop.
        """
        namespace = server.metadata.namespace
        mine = [r for r in resources if r.metadata.namespace == namespace]
        by_name = {(r.kind, r.metadata.name): r for r in mine}

        def resolve(kind: type[R], name: str) -> R:
            found = by_name.get((kind.__name__, name))
            if not isinstance(found, kind):
                raise LookupError(
                    f"incoming server {server.metadata.name} uses {kind.__name__} {name}, "
                    f"which does not exist in namespace {namespace}")
            return found

        spec = server.spec
        found = next((r for r in mine if isinstance(r, MailSettings)), None)
        settings = found.spec if found is not None else MailSettingsSpec()
        mailboxes = frozenset(a.casefold() for a in (spec.email, *spec.addresses))
        sender_filter = resolve(RecipientFilter, spec.recipient_filter) \
            if spec.recipient_filter else None
        command = resolve(EmailCommand, spec.email_command) if spec.email_command else None
        spam = [resolve(SpamFilter, name) for name in spec.spam_filters]
        return cls(
            server=server,
            settings=settings,
            mailboxes=mailboxes,
            own_addresses=_own_addresses(mine) | mailboxes,
            sender_filter=AddressList.of(sender_filter) if sender_filter else None,
            spam_filters=tuple(
                ConditionSet(f.metadata.name, MatchMode(f.spec.match), tuple(f.spec.conditions))
                for f in spam if f.spec.enabled),
            rules=_compile_rules(mine, server.metadata.name),
            command=_compile_command(command) if command and command.spec.enabled else None,
            request_ids=request_id_pattern(settings),
            attachments=AttachmentPolicy(
                int(settings.attachment_limit_mb * MIB),
                _extensions(settings.incoming_attachments.blocked_extensions),
                _extensions(settings.incoming_attachments.allowed_extensions)),
            creation_emails=frozenset(e.casefold() for e in spec.creation.allowed_emails),
            creation_domains=frozenset(d.casefold() for d in spec.creation.allowed_domains),
            defaults=tuple(spec.defaults.model_dump(by_alias=True, exclude_none=True).items()),
            directory=directory_for(mine, directory),
            seen_message_id=seen_message_id,
            thread_lookup=thread_lookup,
            sent_lookup=sent_lookup,
        )


def _own_addresses(resources: Iterable[Resource]) -> frozenset[str]:
    """Every address the namespace's desk sends or fetches from, casefolded."""
    own: list[str] = []
    for r in resources:
        if isinstance(r, OutgoingServer):
            own += [a for a in (r.spec.email, r.spec.reply_to, r.spec.mailbox) if a]
        elif isinstance(r, IncomingServer):
            own += [r.spec.email, *r.spec.addresses]
    return frozenset(a.strip().casefold() for a in own)


def _compile_rules(resources: Iterable[Resource], server: str) -> tuple[CompiledRule, ...]:
    """The enabled rules that apply to ``server``, in evaluation order."""
    rules = [r for r in resources if isinstance(r, IncomingEmailRule) and r.spec.enabled
             and (not r.spec.servers or server in r.spec.servers)]
    return tuple(
        CompiledRule(r.metadata.name, MatchMode(r.spec.match), tuple(r.spec.conditions),
                     IncomingAction(r.spec.action), tuple(r.spec.set_fields.items()),
                     r.spec.stop_processing)
        for r in sorted(rules, key=lambda r: (r.spec.order, r.metadata.name)))


def _compile_command(email_command: EmailCommand) -> CompiledCommand:
    c = email_command.spec
    return CompiledCommand(
        email_command.metadata.name, c.subject_contains.casefold(),
        command_pattern(c.delimiter), frozenset(c.operations),
        frozenset(f.casefold() for f in c.allowed_fields), c.authorized_senders_only,
        c.resources)


def _extensions(listed: Iterable[str]) -> frozenset[str]:
    return frozenset(e.lstrip(".").casefold() for e in listed)


def require_directory(ctx: PipelineContext) -> None:
    """With guest tickets off, only a directory can tell users from guests; without one
    every sender would pass as a user, so the server is not fetched (LookupError)."""
    if ctx.directory is None and not ctx.settings.guest_tickets:
        raise LookupError(
            f"guestTickets is off in namespace {ctx.namespace}, but no sender directory says "
            "who the desk's users are, so guests cannot be told apart; add a SenderDirectory "
            "resource to the namespace (or start the daemon with --sender-directory FILE), "
            "or set guestTickets: true in its MailSettings")
