"""The synchronous SDK against a running Writ."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import httpx
import pytest

from conftest import payout, upstream_received
from writ import (
    AccessDeniedError,
    Agent,
    ApprovalTimeoutError,
    GatewayPathError,
    InvalidGrantError,
    Orchestrator,
    PolicyRefusalError,
)

BODY = {"destination": "acct_1", "amount": 42000, "currency": "usd"}


@pytest.fixture
def orchestrator(writ: dict[str, Any]):
    with Orchestrator(writ["issuer"], writ["orchestrator"]["id"], writ["orchestrator"]["jwk"], allow_insecure_requests=True) as client:
        yield client


def make_agent(writ: dict[str, Any], **options: Any) -> Agent:
    return Agent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True, **options)


def new_task(writ, orchestrator, allowed):
    return orchestrator.create_task(writ["agent"]["id"], "pay invoice INV-42 to Acme", allowed, 600)


def test_run_task_completes_on_return_and_fails_on_exception(writ, orchestrator, allowed):
    agent = make_agent(writ, dpop=False)
    seen: dict[str, Any] = {}

    def work(task):
        seen["task_id"] = task.task_id
        seen["token"] = agent.credential(task.task_token, "payments", "payouts.get").access_token
        raise RuntimeError("the model went off the rails")

    with pytest.raises(RuntimeError, match="off the rails"):
        orchestrator.run_task(work, writ["agent"]["id"], "pay invoice INV-42", allowed, 600)
    assert orchestrator.get_task(seen["task_id"])["status"] == "failed"
    refused = httpx.get(f"{writ['gateway_url']}/connectors/payments/v1/payouts/po_1", headers={"authorization": f"Bearer {seen['token']}"})
    assert refused.status_code == 401
    assert "invalid_token" in refused.headers["www-authenticate"]

    done = orchestrator.run_task(lambda task: task.task_id, writ["agent"]["id"], "pay invoice INV-42", allowed, 600)
    assert orchestrator.get_task(done)["status"] == "completed"


def test_task_context_manager_fails_on_exception(writ, orchestrator, allowed):
    with pytest.raises(KeyError):
        with orchestrator.task(writ["agent"]["id"], "pay invoice INV-42", allowed, 600) as task:
            raise KeyError("boom")
    assert orchestrator.get_task(task.task_id)["status"] == "failed"


def test_exchange_is_exact_bound_and_cached(writ, orchestrator, allowed):
    task = new_task(writ, orchestrator, allowed)
    with make_agent(writ) as agent:
        first = agent.credential(task.task_token, **payout(42000))
        assert first.token_type == "DPoP"
        assert first.authorization_details == [{"type": "connector", "connector": "payments", "actions": ["payouts.create"],
                                                "constraints": {"destination": "acct_1", "amount_max": 42000, "currency": "usd"}}]
        claims = _claims(first.access_token)
        assert claims["aud"] == f"{writ['gateway_url']}/connectors/payments"
        assert claims["cnf"] == {"jkt": agent.dpop_thumbprint}
        assert claims["task_id"] == task.task_id
        assert agent.credential(task.task_token, **payout(42000)).access_token == first.access_token
        assert agent.credential(task.task_token, **payout(41000)).access_token != first.access_token


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_dpop_bound_gateway_calls(writ, orchestrator, allowed):
    task = new_task(writ, orchestrator, allowed)
    with make_agent(writ) as agent:
        run = agent.for_task(task.task_token)
        paid = run.fetch("payments", "payouts.create", "/v1/payouts", constraints=payout(42000)["constraints"], json=BODY)
        assert paid.status_code == 201
        last = upstream_received(writ)[-1]
        assert last["authorization"] == f"Bearer {writ['upstream_secret']}"
        assert last["dpop"] is None
        # One-use write credential: the second payout re-exchanges once, after the gateway's 401.
        again = run.fetch("payments", "payouts.create", "/v1/payouts", constraints=payout(42000)["constraints"], json=BODY)
        assert again.status_code == 201
        read = run.fetch("payments", "payouts.get", f"/v1/payouts/{again.json()['id']}")
        assert read.status_code == 200 and read.json()["status"] == "paid"
        outside = run.fetch("payments", "payouts.create", "/v1/payouts", constraints=payout(42000)["constraints"], json={**BODY, "destination": "acct_2"})
        assert outside.status_code == 403
        assert outside.json()["rule"] == "constraint:destination"
        # Without the SDK's proof, the bound credential is worthless.
        credential = run.credential("payments", "payouts.get")
        stolen = httpx.get(f"{writ['gateway_url']}/connectors/payments/v1/payouts/{again.json()['id']}", headers={"authorization": f"DPoP {credential.access_token}"})
        assert stolen.status_code == 401


def test_concurrent_identical_payouts_each_go_through(writ, orchestrator, allowed):
    # Write credentials are one-use: the one the threads share pays once, and each refused call needs its own.
    task = new_task(writ, orchestrator, allowed)
    with make_agent(writ) as agent:
        run = agent.for_task(task.task_token)
        statuses: list[int] = []

        def pay() -> None:
            statuses.append(run.fetch("payments", "payouts.create", "/v1/payouts", constraints=payout(42000)["constraints"], json=BODY).status_code)

        threads = [threading.Thread(target=pay) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [201, 201, 201]


@pytest.mark.parametrize("path", [
    "https://evil.example/v1/payouts/po_1",
    "//evil.example/v1/payouts",
    "/v1/../../admin",
    "/v1/payouts/..",
    "/v1/%2e%2e/x",
    "/v1/%252e/x",
    "/v1//payouts",
    "\\\\evil.example\\x",
    "v1/payouts",
    "/v1/payouts#x",
])
def test_refuses_targets_outside_the_connector(writ, path):
    sent: list[httpx.Request] = []
    client = httpx.Client(event_hooks={"request": [sent.append]})
    agent = Agent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True, http=client)
    with pytest.raises(GatewayPathError):
        agent.fetch("not-a-real-task-token", "payments", "payouts.get", path)
    assert sent == []  # not even a token exchange
    client.close()


def test_policy_refusal_carries_the_reasons(writ, orchestrator, allowed):
    task = new_task(writ, orchestrator, allowed)
    with make_agent(writ) as agent:
        with pytest.raises(PolicyRefusalError) as refused:
            agent.credential(task.task_token, **payout(42000, "acct_attacker"))
        assert refused.value.error == "invalid_authorization_details"
        assert refused.value.status == 400
        assert any("destination" in reason for reason in refused.value.reasons)
        orchestrator.complete_task(task.task_id)
        with pytest.raises(InvalidGrantError):
            agent.credential(task.task_token, **payout(42000))


def test_waits_for_an_operator_approval(writ, orchestrator, allowed, admin):
    task = new_task(writ, orchestrator, allowed)
    pending = []

    def on_pending(seen):
        pending.append(seen)
        if len(pending) == 1:
            threading.Thread(target=admin, args=("POST", f"/v1/approvals/{seen.approval_id}/approve", {"note": "checked"})).start()

    with make_agent(writ) as agent:
        credential = agent.credential(task.task_token, **payout(150000), on_pending=on_pending)
    assert pending[0].interval == 5
    assert any("approval" in reason for reason in pending[0].reasons)
    assert credential.authorization_details[0]["constraints"]["amount_max"] == 150000
    assert admin("GET", f"/v1/approvals/{pending[0].approval_id}").json()["status"] == "used"


def test_denied_approval_and_timeout(writ, orchestrator, allowed, admin):
    task = new_task(writ, orchestrator, allowed)
    with make_agent(writ) as agent:
        with pytest.raises(AccessDeniedError):
            agent.credential(task.task_token, **payout(120000),
                             on_pending=lambda seen: admin("POST", f"/v1/approvals/{seen.approval_id}/deny", {"note": "not ours"}))
        with pytest.raises(ApprovalTimeoutError) as timed_out:
            agent.credential(task.task_token, **payout(130000), approval_timeout=1)
        assert timed_out.value.approval_id
