"""``/v1/outbox`` (SPEC O13) on a whole in-process daemon with real SMTP sinks: an
operator lists, inspects, holds, requeues, releases, retries and cancels mail the
daemon is really sending, and every action is audited with the token's name."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from peers.smtp import free_port

from daemon.app_kit import (
    HOST,
    CountingSink,
    audit_of,
    commit,
    cond,
    mail_settings,
    rule,
    run_daemon_until,
    sent,
    settings,
    smtp_server,
    until,
)
from reconciler.daemon.app import Daemon
from reconciler.state import open_store
from reconciler.state.base import AuditStatus, OutboxState

from .api_kit import TOKEN, TOKEN_ENV, auth


def _note(department: str, to: str) -> dict[str, Any]:
    return {"module": "request", "context": {"department": department}, "to": [to],
            "subject": f"for {department}", "textBody": "hello"}


def test_operator_controls_deferred_mail_through_the_api(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with CountingSink() as main, CountingSink() as backup, open_store(store_url) as setup:
        commit(setup,
               smtp_server("main", main.port, primary=True),
               smtp_server("backup", backup.port),
               smtp_server("off", backup.port, enabled=False),
               smtp_server("hr-relay", free_port()),  # nothing listens: mail is deferred
               rule("hr", 1, "hr-relay", cond("department", "HR")),
               mail_settings(initialBackoffSeconds=3600, maxBackoffSeconds=3600))
        port = free_port()
        daemon = Daemon(settings(store_url=store_url, listen_port=port,
                                 api_tokens=(f"env:{TOKEN_ENV}",)), health=False)

        async def work() -> None:
            assert daemon.store is not None
            store = daemon.store
            await until(lambda: daemon.api_server is not None and daemon.api_server.started,
                        "the API to listen")
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", headers=auth(),
                                         timeout=60) as api:
                async def submit(department: str, to: str) -> int:
                    answer = await api.post("/v1/notifications", json=_note(department, to))
                    assert answer.status_code == 202, answer.text
                    return int(answer.json()["id"])

                it = await submit("IT", "jane@corp.example")
                hr = await submit("HR", "hr-lead@corp.example")
                await sent(store, it)  # type: ignore[arg-type]
                status = (await api.get(f"/v1/notifications/{it}")).json()
                assert status["routing"]["server"] == "main"
                assert status["routing"]["via"] == "primary"
                assert status["routing"]["rules"][0]["verdict"] == "not matched"
                await until(lambda: (m := store.outbox.get(hr)) is not None
                            and m.state is OutboxState.RETRY_WAIT, "HR mail deferred")

                listed = (await api.get("/v1/outbox", params={
                    "state": "retry_wait", "recipient": "HR-LEAD@corp.example"})).json()
                assert [m["id"] for m in listed["messages"]] == [hr]
                assert listed["counts"]["retry_wait"] == 1
                shown = (await api.get(f"/v1/outbox/{hr}")).json()
                assert shown["routing"]["rule"] == "hr"
                assert shown["routing"]["server"] == "hr-relay"
                assert shown["history"][0]["statuses"] == ["RETRYING"]
                assert shown["history"][0]["errors"]

                held = await api.post("/v1/outbox/actions/hold", json={"ids": [hr],
                                                               "reason": "relay down"})
                assert held.json()["changed"] == [hr]
                assert held.json()["actor"] == f"api token env:{TOKEN_ENV}"
                retried = await api.post("/v1/outbox/actions/retry", json={"ids": [hr]})
                assert retried.status_code == 409 and "held" in retried.json()["detail"]
                for target, why in (("nope", "does not exist"), ("off", "disabled")):
                    refused = await api.post("/v1/outbox/actions/requeue",
                                             json={"ids": [hr], "toServer": target})
                    assert refused.status_code == 409 and why in refused.json()["detail"]
                moved = await api.post("/v1/outbox/actions/requeue", json={
                    "ids": [hr], "toServer": "backup", "reason": "hr relay is down"})
                assert moved.json()["changed"] == [hr]
                assert store.outbox.get(hr).state is OutboxState.HELD  # type: ignore[union-attr]
                assert backup.count() == 0  # held: requeued, but not sent
                await api.post("/v1/outbox/actions/release", json={"allHeld": True})
                # released, due in an hour: "retry now" sends it through backup
                await api.post("/v1/outbox/actions/retry", json={"allDeferred": True})
                done = await sent(store, hr)  # type: ignore[arg-type]
                assert done.routing is not None and done.routing.server == "backup"
                assert [a.rcpt_tos for a in backup.arrivals()] == [["hr-lead@corp.example"]]

                late = await submit("HR", "payroll@corp.example")
                await until(lambda: (m := store.outbox.get(late)) is not None
                            and m.state is OutboxState.RETRY_WAIT, "second HR mail deferred")
                cancelled = await api.post("/v1/outbox/actions/cancel", json={
                    "server": "hr-relay", "reason": "sent by hand"})
                assert cancelled.json()["changed"] == [late]
                again = await api.post("/v1/outbox/actions/cancel",
                                       json={"ids": [it], "reason": "x"})
                assert again.status_code == 409 and "already sent" in again.json()["detail"]
                no_reason = await api.post("/v1/outbox/actions/cancel", json={"ids": [late]})
                assert no_reason.status_code == 409
                unnamed = await api.post("/v1/outbox/actions/hold", json={})
                assert unnamed.status_code == 409
                anonymous = await api.post("/v1/outbox/actions/hold", json={"ids": [hr]},
                                           headers={"Authorization": ""})
                assert anonymous.status_code == 401

            trail = [(e.status, (e.details or {}).get("actor")) for e in audit_of(
                store, hr) if e.status not in (AuditStatus.RETRYING, AuditStatus.SENT)]  # type: ignore[arg-type]
            who = f"api token env:{TOKEN_ENV}"
            assert trail == [(AuditStatus.SEND_HELD, who), (AuditStatus.SEND_REQUEUED, who),
                             (AuditStatus.SEND_RELEASED, who), (AuditStatus.SEND_RETRY_NOW, who)]
            [entry] = [e for e in audit_of(store, late)  # type: ignore[arg-type]
                       if e.status is AuditStatus.SEND_CANCELLED]
            assert (entry.reason, entry.details["actor"]) == ("sent by hand", who)  # type: ignore[index]
            await asyncio.sleep(0)

        run_daemon_until(daemon, work)
        assert main.count() == 1
