"""The daemon's HTTP API (SPEC O1, O8, X3): intake, notification state, audit,
status, ticket events, metrics and liveness.

One router per area, each a ``router(...)`` building an ``APIRouter`` over the
parts it reads: :mod:`.notifications` (intake and its state; intake itself is
answered in front of FastAPI by :mod:`.intake_route`), :mod:`.audit`,
:mod:`.status`, :mod:`.events` and :mod:`.monitoring` (``/metrics``,
``/healthz``). :func:`.factory.create_api` builds the app from them behind one
bearer-token guard; the daemon serves it with uvicorn inside its own event loop.

What every route shares: the answer models (:mod:`.schemas`), the parameter
types (:mod:`.params`), the 422 shape (:mod:`.problems`), the body limit
(:mod:`.body_limit`) and the refusal log (:mod:`.refusals`).

Intake answers 202 only after the notification is committed (group commit,
see :mod:`reconciler.daemon.intake`). A repeated idempotency key answers 200
with the first notification's id and ``duplicate: true``.

Nothing here imports FastAPI at package level: ``reconcile audit`` reads
:mod:`.schemas` cheaply. Nothing here logs a request body or a token.
"""
