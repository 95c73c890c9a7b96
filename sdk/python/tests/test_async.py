"""The asynchronous SDK against a running Writ."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from conftest import payout, upstream_received
from writ import AsyncAgent, AsyncOrchestrator, GatewayPathError, InvalidGrantError, PolicyRefusalError

BODY = {"destination": "acct_1", "amount": 42000, "currency": "usd"}


def make_orchestrator(writ: dict[str, Any]) -> AsyncOrchestrator:
    return AsyncOrchestrator(writ["issuer"], writ["orchestrator"]["id"], writ["orchestrator"]["jwk"], allow_insecure_requests=True)


def make_agent(writ: dict[str, Any], **options: Any) -> AsyncAgent:
    return AsyncAgent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True, **options)


async def test_run_task_revokes_on_exception_and_on_cancellation(writ, allowed):
    async with make_orchestrator(writ) as orchestrator, make_agent(writ, dpop=False) as agent:
        seen: dict[str, Any] = {}

        async def work(task):
            seen["task_id"] = task.task_id
            seen["token"] = (await agent.credential(task.task_token, "payments", "payouts.get")).access_token
            raise ValueError("bad plan")

        with pytest.raises(ValueError):
            await orchestrator.run_task(work, writ["agent"]["id"], "pay invoice INV-42", allowed, 600)
        assert (await orchestrator.get_task(seen["task_id"]))["status"] == "failed"
        async with httpx.AsyncClient() as client:
            refused = await client.get(f"{writ['gateway_url']}/connectors/payments/v1/payouts/po_1", headers={"authorization": f"Bearer {seen['token']}"})
        assert refused.status_code == 401

        started = asyncio.Event()

        async def stuck(task):
            seen["cancelled"] = task.task_id
            started.set()
            await asyncio.Event().wait()

        running = asyncio.create_task(orchestrator.run_task(stuck, writ["agent"]["id"], "pay invoice INV-42", allowed, 600))
        await started.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        assert (await orchestrator.get_task(seen["cancelled"]))["status"] == "failed"

        async def fine(task):
            return task.task_id

        done = await orchestrator.run_task(fine, writ["agent"]["id"], "pay invoice INV-42", allowed, 600)
        assert (await orchestrator.get_task(done))["status"] == "completed"


async def test_exchange_cache_and_dpop_gateway_calls(writ, allowed):
    async with make_orchestrator(writ) as orchestrator, make_agent(writ) as agent:
        task = await orchestrator.create_task(writ["agent"]["id"], "pay invoice INV-42", allowed, 600)
        run = agent.for_task(task.task_token)
        first, concurrent = await asyncio.gather(run.credential(**payout(42000)), run.credential(**payout(42000)))
        assert concurrent.access_token == first.access_token  # one exchange for both
        assert first.token_type == "DPoP"
        assert (await run.credential(**payout(42000))).access_token == first.access_token
        paid = await run.fetch("payments", "payouts.create", "/v1/payouts", constraints=payout(42000)["constraints"], json=BODY)
        assert paid.status_code == 201
        assert upstream_received(writ)[-1]["authorization"] == f"Bearer {writ['upstream_secret']}"
        read = await run.fetch("payments", "payouts.get", f"/v1/payouts/{paid.json()['id']}")
        assert read.status_code == 200
        with pytest.raises(GatewayPathError):
            await run.fetch("payments", "payouts.get", "//evil.example/x")
        with pytest.raises(PolicyRefusalError) as refused:
            await run.credential(**payout(42000, "acct_attacker"))
        assert any("destination" in reason for reason in refused.value.reasons)
        await orchestrator.complete_task(task.task_id)
        with pytest.raises(InvalidGrantError):
            await run.fetch("payments", "payouts.get", f"/v1/payouts/{paid.json()['id']}")


async def test_async_approval_polling(writ, allowed, admin):
    async with make_orchestrator(writ) as orchestrator, make_agent(writ) as agent:
        task = await orchestrator.create_task(writ["agent"]["id"], "pay invoice INV-42", allowed, 600)
        pending = []

        async def on_pending(seen):
            pending.append(seen)
            if len(pending) == 1:
                await asyncio.to_thread(admin, "POST", f"/v1/approvals/{seen.approval_id}/approve", {"note": "ok"})

        credential = await agent.credential(task.task_token, **payout(150000), on_pending=on_pending)
        assert credential.authorization_details[0]["constraints"]["amount_max"] == 150000
        assert len(pending) == 1
