"""Names vulture cannot see used: framework callbacks and schema fields.

Run as ``vulture reconciler vulture_whitelist.py``. Entries are grouped by the
file that defines them (one block per file keeps parallel edits mergeable).
"""
# ruff: noqa
# mypy: ignore-errors

# -- core: click commands (registered by decorator, called by click) ---------------
# reconciler/cli/auth.py
_.login_command
_.status_command
_.do_GET  # http.server.BaseHTTPRequestHandler callbacks
_.log_message
# reconciler/cli/history.py
_.list_command
_.show_command
_.as_of_command
_.verify_command
_.export_command
# reconciler/cli/live.py
_.set_command
# reconciler/cli/lock.py
_.status_command
# reconciler/cli/secret.py
_.keygen
_.encrypt_command
# reconciler/cli/convert.py
_.preserve_quotes  # ruamel.yaml YAML options, read by ruamel
_.width
# reconciler/cli/incoming.py
_.retry
_.list_errors  # click command, registered by its decorator
# reconciler/cli/main.py
_.get_command  # click.Group hook
# reconciler/cli/outbox.py
_.list_  # `outbox list` (list_ so the builtin stays usable)
# reconciler/cli/daemon.py
_.convert  # click.ParamType hook (WorkersParam)
# reconciler/oauth/flows.py
_.trust_env  # requests.Session option, read by requests

# -- core: pydantic models (fields and enum members are the schema; validators run by pydantic)
# reconciler/config/models/base.py
_.model_config
_.annotations
_._operands
# reconciler/config/models/email_command.py (QuestionType values read from the config)
_.SELECT
_.RADIO
# reconciler/config/models/incoming_server.py
_.technician_group
_.category
# reconciler/config/models/mail_settings.py
_._prefixes
# reconciler/config/models/proxy_server.py
_.HTTPS
# reconciler/config/models/recipient_filter.py
_._not_empty
# reconciler/config/models/spam_filter.py
_._known_field

# reconciler/config/models/sender_directory.py (UserStatus values read from the directory)
_.ARCHIVED
_.DELETED
# reconciler/incoming/notices.py (Transition.facts, called by the health notifier)
_.facts

# -- core: parser callbacks ----------------------------------------------------------
# reconciler/incoming/pipeline/html_text.py (html.parser.HTMLParser)
_.handle_starttag
_.handle_startendtag
_.handle_endtag
_.handle_data
# reconciler/policy/cel.py (lark Interpreter: one method per grammar rule)
_.c_expr
_.c_conditionalor
_.c_conditionaland
_.c_unary
_.c_relation
_.c_addition
_.c_multiplication
_.c_member_dot
_.c_member_index
_.c_member_dot_arg
_.c_ident_arg
_.c_ident
_.c_paren_expr
_.c_list_lit
_.c_map_lit
_.c_literal

# -- mail core: pydantic validators (run by pydantic) and email policy hooks -----------
# reconciler/mail/envelope.py
_._from_text
_._email
_._module
_._id
_._subject
# reconciler/mail/header_guard.py
_.fold  # email.policy.Policy.fold, called by the email package's as_string()

# -- daemon/health (entries grouped by file) --
# reconciler/daemon/api/events.py: response model fields; a FastAPI route
attempts
delivered_at
more
model_config
acknowledged
list_events

# reconciler/daemon/api/factory.py: FastAPI calls app.openapi(); uvicorn calls
# Server.capture_signals()
_.openapi
_.capture_signals

# reconciler/daemon/api/intake_route.py: Starlette sends Response.raw_headers
_.raw_headers

# reconciler/daemon/api/monitoring.py, notifications.py, status.py: FastAPI routes
prometheus
healthz
notification_status
daemon_status

# reconciler/daemon/api/schemas.py: response model fields (some filled by name from
# the store's rows)
model_config
size
module
updated_at
next_attempt_at
first_attempt_at
attempt
dropped_attachments
batches
messages
failed_batches
handed_off
last_fetch
last_success
fetched_by
ticket_events

# reconciler/daemon/app.py: uvicorn reads Server.should_exit
_.should_exit

# reconciler/daemon/intake.py: IntakeStats counters (read through vars() into
# GET /v1/status); Handoff protocol parameters (the worker implements them)
_.batches
_.messages
_.failed_batches
_.handed_off
wanted
unused

# reconciler/daemon/logs.py: logging calls Formatter.format()
_.format

# reconciler/health/monitor.py: Cycle.leader, what probe_once() tells its caller
leader

# -- state: SQLAlchemy and module callbacks ---------------------------------------
# reconciler/state/__init__.py
__getattr__  # module-level lazy import of SqlStore (PEP 562)
# reconciler/state/location.py
_on_connect  # engine "connect" event listener
_on_begin  # engine "begin" event listener
_.isolation_level  # pysqlite: set to None so we emit BEGIN ourselves
# reconciler/state/schema.py
_.impl  # TypeDecorator hooks, read by SQLAlchemy
_.cache_ok
_.process_bind_param
_.process_result_value

# -- mail protocols (lead) --------------------------------------------------------------
# reconciler/mail/{smtp,graph,ews}/transport.py, imap|pop3|ews|graph/fetcher.py and the
# probes' plan/walk/endpoints: named as "module:attribute" strings in mail/registry.py
_.SmtpTransport
_.GraphTransport
_.ImapFetcher
_.Pop3Fetcher
_.EwsFetcher
_.GraphFetcher
_.ews_plan
_.ews_endpoints
_.walk_ews
_.graph_plan
_.graph_endpoints
_.walk_graph
# reconciler/mail/transport.py and each transport: Transport.probe, the one-call health
# check of the Transport interface (DESIGN "The few interfaces"); the monitor walks the
# registry's steps instead, tests and embedders call probe()
_.probe
# observation APIs the tests read to prove pooling, slots and leasing behave:
# reconciler/mail/smtp/pool.py PoolStats, smtp/transport.py pool_stats(),
# graph/transport.py mailbox_stats(), mail/failover.py HostSelector.is_down(),
# incoming/server_loop.py ServerLoop.cycles, imap/fetcher.py uidvalidity
_.opened
_.reused
_.discarded
_.pool_stats
_.mailbox_stats
_.is_down
_.cycles
_.uidvalidity
# reconciler/mail/smtp/pipelining.py: asyncio.Protocol callbacks
_.data_received
_.eof_received
# reconciler/mail/pop3/fetcher.py: poplib.POP3._create_socket override (per-step timing)
_._create_socket
# reconciler/mail/imap/fetcher.py: IMAPClient option; mail/ews/http.py: urllib3 pool option
_.normalise_times
_.cert_reqs
# reconciler/config/positions.py: source marks the tests read back; config/secrets.py:
# a pydantic validator
_.key_marks
_.value_marks
_.item_marks
_._no_literals
# reconciler/history/queries.py: the per-resource history read (tests/history)
_.resource_history
# reconciler/state: contract methods with callers outside reconciler/ (tests, and the
# worker's batched complete_many is the hot path; complete/schedule_retry stay as the
# single-message form of the same contract), schema revision the migration tests read
_.complete
_.schedule_retry
_.link_ticket
_.server_state
_.schema_revision
# -- proxies and incoming checks (proxies) ---------------------------------------------
# reconciler/mail/imap|pop3/probe.py: named as "module:Class" in mail/registry.py
_.ImapCheck
_.Pop3Check
# reconciler/mail/ews|graph/probe.py: named as "module:Class" in mail/registry.py (testconn2)
_.EwsCheck
_.GraphCheck
# reconciler/mail/imap/client.py: IMAPClient's hook that builds the imaplib object
_._create_IMAP4
# reconciler/mail/sender_dns.py: dnspython resolver setting (the --dns-server address)
_.nameservers
# reconciler/sync (sync-safety part): the sync loop (sync-core part) calls these; until
# the two are merged only tests do. SUCCESS/FAILURE are GitHub wire values; rollback and
# next_open are results the loop reads.
_.SUCCESS
_.FAILURE
_.post_status
_.heal
_.notify_sync
_.rollback
_.reachable_before
_.verify_apply
_.next_open
_.parse_window
_.window_verdict
# reconciler/cli/sync.py: click commands (registered by decorator)
_.suspend
_.resume
# reconciler/config/models/sync_policy.py: pydantic field validators
_._cron
_._duration
_._zone
# reconciler/daemon/api/sync.py: FastAPI routes (registered by decorator)
_.sync_status
_.push

# -- console screens: FastAPI routes (registered by decorator, called by FastAPI) -----
# reconciler/console/audit.py, history.py, sync.py, incoming.py
_.audit_page
_.audit_csv
_.history_list
_.revision_page
_.config_yaml
_.incoming_page
_.sync_page
_.sync_now
# -- console (SPEC X6): FastAPI routes registered by decorator; fields read by templates
# reconciler/console/signin.py, servers.py
_.signin_form
_.token_signin
_.oidc_begin
_.oidc_callback
_.test
_.last_activity  # servers.html
_.slug  # servers.html
_.next_after  # outbox.html: where the next page starts
# reconciler/console/oidc.py
_._openid_scope  # pydantic field validator
# reconciler/runtime/access_file.py: pydantic field validators (run by pydantic)
_._reference
_._one_or_more
_._key
_._secret
_._values
_.oidc
# reconciler/config/models/base.py: pydantic model validator (run by pydantic)
_._share_fields_set
