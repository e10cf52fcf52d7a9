"""Names ``vulture --min-confidence 60`` takes for dead code but something outside
Python's call graph uses: FastAPI routes and app attributes, pydantic model fields
(read by serialisation), click commands, overridden framework methods.

Check with ``vulture reconciler vulture_whitelist.py --min-confidence 60``. Entries are
grouped by the file that defines them, files in path order; say in a comment who uses
them. Nothing here is imported or run.
"""
# ruff: noqa

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
