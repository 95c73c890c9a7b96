"""The official Python MCP client (``mcp``) through the Writ gateway, with ``writ.mcp.McpAuth``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from writ import AsyncAgent, AsyncOrchestrator
from writ.mcp import McpAuth, mcp_url

ALLOWED = [
    {"connector": "tools", "actions": ["transfer"], "constraints": {"to": "acct_1", "amount_max": 100}},
    {"connector": "tools", "actions": ["lookup"]},
]


def mcp_received(writ: dict[str, Any]) -> list[dict[str, Any]]:
    return httpx.get(f"{writ['mcp_upstream_url']}/_received").json()


async def test_mcp_client_through_the_gateway(writ):
    async with AsyncOrchestrator(writ["issuer"], writ["orchestrator"]["id"], writ["orchestrator"]["jwk"], allow_insecure_requests=True) as orchestrator, \
            AsyncAgent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True) as agent:
        task = await orchestrator.create_task(writ["agent"]["id"], "pay acct_1 at most 100", ALLOWED, 600)
        # A fixed grant for transfers (to acct_1, at most 100), whatever the model asks for: the gateway holds the line.
        auth = McpAuth(agent, task.task_token, "tools", session="lookup",
                       constraints=lambda tool, args: {"to": "acct_1", "amount_max": 100} if tool == "transfer" else None)
        before = len(mcp_received(writ))
        async with httpx.AsyncClient(auth=auth) as http, streamable_http_client(mcp_url(agent, "tools"), http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                assert sorted(tool.name for tool in listed.tools) == ["lookup", "transfer"]

                result = await session.call_tool("transfer", {"to": "acct_1", "amount": 42})
                assert not result.isError
                assert result.content[0].text == "sent 42 to acct_1"

                # Outside the grant: a JSON-RPC error for this call only; the session goes on.
                with pytest.raises(McpError) as refused:
                    await session.call_tool("transfer", {"to": "acct_1", "amount": 500})
                assert refused.value.error.code == -32003
                assert refused.value.error.data["rule"] == "constraint:amount_max"
                found = await session.call_tool("lookup", {"q": "invoice"})
                assert found.content[0].text == "found invoice"

        seen = mcp_received(writ)[before:]
        assert [entry["tool"] for entry in seen if entry["rpc"] == "tools/call"] == ["transfer", "lookup"]
        assert all(entry["authorization"] == f"Bearer {writ['upstream_secret']}" and entry["dpop"] is None for entry in seen)


async def test_mcp_client_with_one_credential_is_held_to_it(writ):
    async with AsyncOrchestrator(writ["issuer"], writ["orchestrator"]["id"], writ["orchestrator"]["jwk"], allow_insecure_requests=True) as orchestrator, \
            AsyncAgent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True, dpop=False) as agent:
        task = await orchestrator.create_task(writ["agent"]["id"], "pay acct_1 at most 100", ALLOWED, 600)
        # A client that holds one one-use credential for transfers and tries everything with it.
        transfer = await agent.credential(task.task_token, "tools", "transfer", {"to": "acct_1", "amount_max": 100})
        before = len(mcp_received(writ))
        with pytest.raises(BaseException) as ended:
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {transfer.access_token}"}) as http, \
                    streamable_http_client(mcp_url(agent, "tools"), http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    with pytest.raises(McpError) as other_tool:
                        await session.call_tool("wipe", {})
                    assert other_tool.value.error.data["rule"] == "action"
                    assert (await session.call_tool("transfer", {"to": "acct_1", "amount": 7})).content[0].text == "sent 7 to acct_1"
                    # Replayed: the use is spent. The gateway answers 401, on which the Python transport ends the session.
                    await session.call_tool("transfer", {"to": "acct_1", "amount": 7})
        assert "401" in repr(ended.value) or "401" in str(getattr(ended.value, "exceptions", ""))
        seen = mcp_received(writ)[before:]
        assert [entry["tool"] for entry in seen if entry["rpc"] == "tools/call"] == ["transfer"]


async def test_mcp_transport_fails_only_the_call_writ_refuses(writ):
    from writ import PolicyRefusalError
    from writ.mcp import McpTransport

    async with AsyncOrchestrator(writ["issuer"], writ["orchestrator"]["id"], writ["orchestrator"]["jwk"], allow_insecure_requests=True) as orchestrator, \
            AsyncAgent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True) as agent:
        task = await orchestrator.create_task(writ["agent"]["id"], "pay acct_1 at most 100", ALLOWED, 600)
        # Constraints derived from the arguments (docs/agents.md): Writ's policy refuses a wider call before the gateway.
        auth = McpAuth(agent, task.task_token, "tools", session="lookup",
                       constraints=lambda tool, args: {"to": args["to"], "amount_max": args["amount"]} if tool == "transfer" else None)
        before = len(mcp_received(writ))
        async with httpx.AsyncClient(transport=McpTransport(auth)) as http, streamable_http_client(mcp_url(agent, "tools"), http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                for tool, arguments in (("transfer", {"to": "acct_1", "amount": 500}), ("wipe", {})):
                    with pytest.raises(McpError) as refused:
                        await session.call_tool(tool, arguments)
                    assert refused.value.error.code == -32003
                    assert refused.value.error.data["error"] == "invalid_authorization_details"
                # The session goes on.
                assert (await session.call_tool("transfer", {"to": "acct_1", "amount": 42})).content[0].text == "sent 42 to acct_1"
        assert [entry["tool"] for entry in mcp_received(writ)[before:] if entry["rpc"] == "tools/call"] == ["transfer"]
        # As the client's auth alone, the same refusal is raised inside the MCP client, which ends the session.
        with pytest.raises(BaseException) as ended:
            async with httpx.AsyncClient(auth=auth) as http, streamable_http_client(mcp_url(agent, "tools"), http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    await session.call_tool("transfer", {"to": "acct_1", "amount": 500})
        assert isinstance(ended.value, PolicyRefusalError) or ended.group_contains(PolicyRefusalError)
