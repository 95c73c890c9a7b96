"""The framework tools, invoked directly (no model): LangChain and the OpenAI Agents SDK."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from writ import Agent, AsyncAgent, OperationCall, Orchestrator
from writ.tools.langchain import writ_tool
from writ.tools.openai_agents import writ_function_tool


class Payout(BaseModel):
    destination: str
    amount: int
    currency: str


TOOL = dict(
    name="pay_invoice",
    description="Pay an invoice",
    args_schema=Payout,
    connector="payments",
    action="payouts.create",
    constraints=lambda args: {"destination": args.destination, "amount_max": args.amount, "currency": args.currency},
    request=lambda args: OperationCall(method="POST", path="/v1/payouts", json=args.model_dump()),
)


@pytest.fixture
def task(writ: dict[str, Any], allowed):
    with Orchestrator(writ["issuer"], writ["orchestrator"]["id"], writ["orchestrator"]["jwk"], allow_insecure_requests=True) as orchestrator:
        created = orchestrator.create_task(writ["agent"]["id"], "pay invoice INV-42", allowed, 600)
        yield created
        orchestrator.fail_task(created.task_id)


def test_langchain_tool_pays_exactly_what_the_model_asked(writ, task):
    agent = Agent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True)
    tool = writ_tool(agent.for_task(task.task_token), **TOOL)
    assert set(tool.args) == {"destination", "amount", "currency"}
    result = tool.invoke({"destination": "acct_1", "amount": 42000, "currency": "usd"})
    assert result["status"] == 201
    assert result["body"]["destination"] == "acct_1"
    # The policy's refusal comes back as the tool's output, for the model to read.
    refused = tool.invoke({"destination": "acct_attacker", "amount": 42000, "currency": "usd"})
    assert isinstance(refused, str)
    assert "invalid_authorization_details" in refused and "destination" in refused


async def test_langchain_tool_async(writ, task):
    agent = AsyncAgent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True)
    tool = writ_tool(agent.for_task(task.task_token), **TOOL)
    result = await tool.ainvoke({"destination": "acct_1", "amount": 41000, "currency": "usd"})
    assert result["status"] == 201
    await agent.close()


async def test_openai_agents_function_tool(writ, task):
    from agents.tool_context import ToolContext

    agent = AsyncAgent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True)
    tool = writ_function_tool(agent.for_task(task.task_token), **TOOL)
    assert tool.name == "pay_invoice"
    assert set(tool.params_json_schema["properties"]) == {"destination", "amount", "currency"}
    context = ToolContext(context=None, tool_name="pay_invoice", tool_call_id="call-1", tool_arguments="{}")
    paid = json.loads(await tool.on_invoke_tool(context, json.dumps({"destination": "acct_1", "amount": 40000, "currency": "usd"})))
    assert paid["status"] == 201 and paid["body"]["amount"] == 40000
    refused = await tool.on_invoke_tool(context, json.dumps({"destination": "acct_attacker", "amount": 40000, "currency": "usd"}))
    assert refused.startswith("error: ") and "destination" in refused
    sync_tool = writ_function_tool(Agent(writ["issuer"], writ["agent"]["id"], writ["agent"]["jwk"], writ["gateway_url"], allow_insecure_requests=True).for_task(task.task_token), **TOOL)
    outside = await sync_tool.on_invoke_tool(context, json.dumps({"destination": "acct_1", "amount": 999999, "currency": "usd"}))
    assert outside.startswith("error: ")
    await agent.close()
