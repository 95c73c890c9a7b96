"""Unit tests without a server: 429/503 retries, DPoP nonces, clock skew, single flight, secrets in reprs."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import Counter
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from joserfc.jwk import ECKey

from writ import AccessDeniedError, Agent, AsyncAgent, InvalidClientError, Orchestrator, WritOAuthError
from writ import _core

ISSUER = "https://writ.example"
GATEWAY = "https://gw.example"


def private_jwk() -> dict[str, Any]:
    return {**ECKey.generate_key("P-256", private=True).as_dict(private=True), "kid": "k1"}


def claims(jwt: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(jwt.split(".")[1] + "=="))


Answer = tuple[int, dict[str, Any] | None, dict[str, str]]


def issued(token: str = "at-secret", token_type: str = "Bearer") -> Answer:
    return (200, {"access_token": token, "token_type": token_type, "expires_in": 120}, {})


class Scripted:
    """Writ's token endpoint, Tasks API and gateway answering from a script, recording what they were sent."""

    def __init__(self, answers: list[Answer], discovery_headers: dict[str, str] | None = None, delay: float = 0.0) -> None:
        self.answers = answers
        self.seen: list[httpx.Request] = []
        self.discovery_headers = discovery_headers or {}
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"}, headers=self.discovery_headers)
        if self.delay:
            time.sleep(self.delay)  # holds the exchange open so that concurrent callers overlap it
        with self.lock:
            self.seen.append(request)
            status, body, headers = self.answers.pop(0)
        return httpx.Response(status, json=body, headers=headers) if body is not None else httpx.Response(status, headers=headers)

    def tokens(self) -> list[httpx.Request]:
        return [request for request in self.seen if request.url.path == "/oauth2/token"]


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    import writ.client as sync_client

    recorded: list[float] = []
    monkeypatch.setattr(sync_client.time, "sleep", recorded.append)  # records the waits instead of sleeping
    return recorded


def agent_for(server: Scripted, dpop: bool = False) -> Agent:
    return Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=dpop, http=httpx.Client(transport=httpx.MockTransport(server)))


def test_retry_delays_honour_retry_after_and_are_bounded():
    answer = lambda status, **headers: httpx.Response(status, headers={name.replace("_", "-"): value for name, value in headers.items()})  # noqa: E731
    assert _core.retry_delay(answer(503, retry_after="2"), 0, lambda: 0) == 2
    assert 2 <= _core.retry_delay(answer(503, retry_after="2"), 0, lambda: 0.999) <= 2.4
    assert _core.retry_delay(answer(429, retry_after="1"), 2, lambda: 0) == 1
    for status in (400, 401, 403, 404, 500, 502):
        assert _core.retry_delay(answer(status, retry_after="1"), 0) is None
    assert _core.retry_delay(answer(503, retry_after="1"), 3) is None  # at most three retries
    assert _core.retry_delay(answer(503, retry_after="3600"), 0) is None  # too long: the caller decides
    # An HTTP-date is read against the server's Date, not our (an hour late) clock.
    server_now = time.time() + 3600
    dated = answer(503, date=formatdate(server_now, usegmt=True), retry_after=formatdate(server_now + 5, usegmt=True))
    assert _core.retry_delay(dated, 0, lambda: 0) == pytest.approx(5, abs=1)


def test_the_token_endpoint_is_retried_after_retry_after(waits):
    server = Scripted([(503, {"error": "temporarily_unavailable"}, {"retry-after": "2"}), issued()])
    credential = agent_for(server).credential("task-token", "payments", "payouts.get")
    assert credential.access_token == "at-secret"
    assert len(server.tokens()) == 2 and len(waits) == 1 and 2 <= waits[0] <= 2.4
    forms = [parse_qs(request.content.decode()) for request in server.tokens()]
    assert forms[0]["client_assertion"] != forms[1]["client_assertion"]  # a fresh assertion per attempt


def test_retries_are_bounded(waits):
    busy: Answer = (429, {"error": "too_many_requests"}, {"retry-after": "1"})
    server = Scripted([busy, busy, busy, busy, issued()])
    with pytest.raises(WritOAuthError) as refused:
        agent_for(server).credential("task-token", "payments", "payouts.get")
    assert refused.value.status == 429
    assert len(server.tokens()) == 4 and len(waits) == 3


@pytest.mark.parametrize(("status", "code", "kind"), [(400, "access_denied", AccessDeniedError), (401, "invalid_client", InvalidClientError), (403, "insufficient_scope", WritOAuthError)])
def test_refusals_are_never_retried(waits, status, code, kind):
    server = Scripted([(status, {"error": code}, {"retry-after": "1"}), issued()])
    with pytest.raises(kind):
        agent_for(server).credential("task-token", "payments", "payouts.get")
    assert len(server.tokens()) == 1 and waits == []


def test_the_token_endpoint_nonce_is_sent_once():
    server = Scripted([(400, {"error": "use_dpop_nonce", "error_description": "a DPoP nonce is required"}, {"dpop-nonce": "n-1"}), issued("at", "DPoP")])
    assert agent_for(server, dpop=True).credential("task-token", "payments", "payouts.get").token_type == "DPoP"
    assert [claims(request.headers["dpop"]).get("nonce") for request in server.tokens()] == [None, "n-1"]


def test_gateway_calls_retry_only_when_idempotent(waits):
    unavailable: Answer = (503, {"error": "unavailable"}, {"retry-after": "1"})
    server = Scripted([issued(), unavailable, (200, {"ok": True}, {}), unavailable])
    agent = agent_for(server)
    assert agent.fetch("t", "payments", "payouts.get", "/v1/payouts/po_1").status_code == 200
    assert agent.fetch("t", "payments", "payouts.get", "/v1/payouts", json={"amount": 1}).status_code == 503
    assert [request.method for request in server.seen] == ["POST", "GET", "GET", "POST"]
    assert len(waits) == 1


def test_the_gateway_nonce_challenge_keeps_the_credential():
    server = Scripted([
        issued("at", "DPoP"),
        (401, None, {"www-authenticate": 'DPoP error="use_dpop_nonce", algs="ES256"', "dpop-nonce": "gw-n"}),
        (200, {"ok": True}, {}),
    ])
    assert agent_for(server, dpop=True).fetch("t", "payments", "payouts.get", "/v1/payouts/po_1").status_code == 200
    assert len(server.tokens()) == 1
    gateway_calls = [request for request in server.seen if request.url.host == "gw.example"]
    assert [claims(request.headers["dpop"]).get("nonce") for request in gateway_calls] == [None, "gw-n"]


def test_assertions_and_proofs_follow_the_servers_clock():
    ahead = time.time() + 3600  # our clock is an hour late
    server = Scripted([issued("at", "DPoP")], discovery_headers={"date": formatdate(ahead, usegmt=True)})
    agent_for(server, dpop=True).credential("task-token", "payments", "payouts.get")
    request = server.tokens()[0]
    assertion = claims(parse_qs(request.content.decode())["client_assertion"][0])
    assert abs(assertion["iat"] - ahead) < 60 and abs(assertion["exp"] - ahead) < 120
    assert abs(claims(request.headers["dpop"])["iat"] - ahead) < 60


def test_threads_share_one_exchange_per_exact_request():
    server = Scripted([issued("a"), issued("b"), issued("c")], delay=0.2)
    agent = agent_for(server)
    narrow = {"destination": "acct_1", "amount_max": 10}
    barrier = threading.Barrier(6)
    got: list[str] = []

    def ask(constraints: dict[str, Any]) -> None:
        barrier.wait()
        got.append(agent.credential("t", "payments", "payouts.create", constraints).access_token)

    threads = [threading.Thread(target=ask, args=(narrow,)) for _ in range(5)] + [threading.Thread(target=ask, args=({**narrow, "amount_max": 1000},))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(server.tokens()) == 2  # one for the five identical requests, one for the wider one
    assert sorted(Counter(got).values()) == [1, 5]


def test_async_token_endpoint_retry_and_nonce(monkeypatch):
    import writ.aio as async_client

    recorded: list[float] = []

    async def no_sleep(delay: float) -> None:
        recorded.append(delay)

    monkeypatch.setattr(async_client.asyncio, "sleep", no_sleep)
    server = Scripted([
        (503, {"error": "temporarily_unavailable"}, {"retry-after": "1"}),
        (400, {"error": "use_dpop_nonce"}, {"dpop-nonce": "n-2"}),
        issued("at", "DPoP"),
    ])

    async def run() -> str:
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, http=httpx.AsyncClient(transport=httpx.MockTransport(server)))
        return (await agent.credential("t", "payments", "payouts.get")).token_type

    assert asyncio.run(run()) == "DPoP"
    assert len(recorded) == 1 and [claims(request.headers["dpop"]).get("nonce") for request in server.tokens()] == [None, None, "n-2"]


def test_the_tasks_api_is_retried_when_shed(waits):
    server = Scripted([issued("tasks-at"), (503, {"error": "temporarily_unavailable"}, {"retry-after": "1"}), (200, {"task_id": "t1", "status": "completed"}, {})])
    orchestrator = Orchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.Client(transport=httpx.MockTransport(server)))
    assert orchestrator.complete_task("t1") == {"task_id": "t1", "status": "completed"}
    assert len(waits) == 1


def test_a_task_declaration_keeps_its_idempotency_key_across_retries(waits):
    created = {"task_id": "t1", "task_token": "tt", "expires_at": "2026-01-01T00:00:00Z", "status": "active"}
    answers = [issued("tasks-at"), (503, {"error": "temporarily_unavailable"}, {"retry-after": "1"}), (201, created, {}), (201, created, {})]
    server = Scripted(answers)
    orchestrator = Orchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.Client(transport=httpx.MockTransport(server)))
    allowed = [{"connector": "payments", "actions": ["payouts.create"]}]
    assert orchestrator.create_task("agent-1", "pay", allowed, 60).task_id == "t1"
    orchestrator.create_task("agent-1", "pay", allowed, 60)
    keys = [request.headers.get("idempotency-key") for request in server.seen if request.url.path == "/v1/tasks"]
    # The retry of one declaration sends its key again; the next declaration has a key of its own.
    assert len(keys) == 3 and keys[0] and keys[1] == keys[0] and keys[2] != keys[0]


async def _declare_async(server: "Scripted") -> None:
    from writ import AsyncOrchestrator

    orchestrator = AsyncOrchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.AsyncClient(transport=httpx.MockTransport(server)))
    await orchestrator.create_task("agent-1", "pay", [{"connector": "payments", "actions": ["payouts.create"]}], 60)


def test_an_async_task_declaration_sends_an_idempotency_key():
    created = {"task_id": "t1", "task_token": "tt", "expires_at": "2026-01-01T00:00:00Z", "status": "active"}
    server = Scripted([issued("tasks-at"), (201, created, {})])
    asyncio.run(_declare_async(server))
    keys = [request.headers.get("idempotency-key") for request in server.seen if request.url.path == "/v1/tasks"]
    assert len(keys) == 1 and len(keys[0]) == 36


def test_the_dpop_private_key_stays_out_of_reprs():
    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY)
    private = agent._dpop._key.as_dict(private=True)["d"]
    assert private not in repr(agent._dpop) and private not in repr(vars(agent))


def test_mcp_auth_sends_credentials_to_the_connector_url_only():
    from writ import GatewayPathError
    from writ.mcp import McpAuth, mcp_url

    server = Scripted([issued("at-secret", "DPoP"), (200, {"jsonrpc": "2.0", "id": 1, "result": {}}, {})])

    async def run() -> None:
        transport = httpx.MockTransport(server)
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, http=httpx.AsyncClient(transport=transport))
        auth = McpAuth(agent, "task-token", "tools", session="lookup")
        async with httpx.AsyncClient(auth=auth, transport=transport) as http:
            for elsewhere in ("https://evil.example/connectors/tools", f"{GATEWAY}/connectors/other", f"{GATEWAY}/connectors/tools/x"):
                with pytest.raises(GatewayPathError):
                    await http.post(elsewhere, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert server.seen == []  # no credential was even asked for
            ok = await http.post(mcp_url(agent, "tools"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert ok.status_code == 200 and ok.request.headers["authorization"] == "DPoP at-secret"

    asyncio.run(run())


def test_the_task_token_goes_to_an_https_token_endpoint_only():
    from writ import WritError

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": "http://writ.example/oauth2/token"})
        return httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 60})

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(WritError, match="https") as raised:  # discovery_failed, as in TypeScript
        agent.credential("secret-task-token", "payments", "payouts.get")
    assert raised.value.code == "discovery_failed"
    assert [request.url.path for request in seen] == ["/.well-known/oauth-authorization-server"]


def test_a_task_id_is_one_path_segment(waits):
    from writ import WritError

    server = Scripted([issued("tasks-at"), (200, {"task_id": "x"}, {}), (200, {"task_id": "x"}, {})])
    orchestrator = Orchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.Client(transport=httpx.MockTransport(server)))
    orchestrator.get_task("../../oauth2/revoke?token=x#y")
    orchestrator.complete_task("a/b")
    assert [request.url.raw_path for request in server.seen[1:]] == [b"/v1/tasks/..%2F..%2Foauth2%2Frevoke%3Ftoken%3Dx%23y", b"/v1/tasks/a%2Fb/complete"]
    with pytest.raises(WritError):
        orchestrator.fail_task("..")


REFUSED_TOKEN: Answer = (401, {"error": "invalid_token"}, {"www-authenticate": 'Bearer realm="writ", error="invalid_token", error_description="spent"'})
UPSTREAM_401: Answer = (401, {"error": "bad upstream credential"}, {})  # the gateway drops the upstream's WWW-Authenticate


def test_an_upstream_401_is_an_answer_and_a_write_is_not_sent_twice():
    # Only the gateway's own refusal of the credential (its challenge names invalid_token) means nothing was
    # forwarded; an upstream's 401 comes through without a challenge, after the upstream got the request.
    server = Scripted([issued("at-1"), UPSTREAM_401, issued("at-2"), REFUSED_TOKEN, issued("at-3"), (201, {"id": "po_1"}, {})])
    agent = agent_for(server)
    assert agent.fetch("t", "payments", "payouts.create", "/v1/payouts", json={"amount": 1}).status_code == 401
    assert [request.url.host for request in server.seen] == ["writ.example", "gw.example"]
    agent.forget("t")
    # The gateway's refusal: a new credential, and the call once more.
    assert agent.fetch("t", "payments", "payouts.create", "/v1/payouts", json={"amount": 1}).status_code == 201
    assert [request.headers.get("authorization") for request in server.seen[-3:]] == ["Bearer at-2", None, "Bearer at-3"]


def test_async_an_upstream_401_is_an_answer_and_a_write_is_not_sent_twice():
    server = Scripted([issued("at-1"), UPSTREAM_401, issued("at-2")])

    async def run() -> int:
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.AsyncClient(transport=httpx.MockTransport(server)))
        return (await agent.fetch("t", "payments", "payouts.create", "/v1/payouts", json={"amount": 1})).status_code

    assert asyncio.run(run()) == 401
    assert [request.url.host for request in server.seen] == ["writ.example", "gw.example"]


def test_mcp_auth_resends_only_after_the_gateways_own_refusal():
    from writ.mcp import McpAuth, mcp_url

    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "transfer", "arguments": {"to": "acct_1"}}}
    server = Scripted([issued("at-1"), UPSTREAM_401, REFUSED_TOKEN, issued("at-2"), (200, {"jsonrpc": "2.0", "id": 1, "result": {}}, {})])
    sent: list[str | None] = []  # as each request arrived (McpAuth sends one request object again, updated)

    def gateway(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("authorization"))
        return server(request)

    async def run() -> list[int]:
        transport = httpx.MockTransport(gateway)
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.AsyncClient(transport=transport))
        auth = McpAuth(agent, "task-token", "tools", session="lookup")
        async with httpx.AsyncClient(auth=auth, transport=transport) as http:
            first = await http.post(mcp_url(agent, "tools"), json=call)
            second = await http.post(mcp_url(agent, "tools"), json=call)
            return [first.status_code, second.status_code]

    assert asyncio.run(run()) == [401, 200]
    # The upstream's 401 is returned; the gateway's refusal of the same credential gets a new one.
    assert [value for value in sent if value] == ["Bearer at-1", "Bearer at-1", "Bearer at-2"]


def test_mcp_transport_answers_a_refused_tool_call_with_a_json_rpc_error():
    from writ import PolicyRefusalError
    from writ.mcp import McpAuth, McpTransport, mcp_url

    refusal: Answer = (400, {"error": "invalid_authorization_details", "error_description": "denied by policy: amount_max 500 is wider"}, {})
    server = Scripted([refusal, refusal, issued("at-1"), (200, {"jsonrpc": "2.0", "id": 8, "result": {}}, {})])
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "transfer", "arguments": {"amount": 500}}}

    async def run() -> None:
        inner = httpx.MockTransport(server)
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.AsyncClient(transport=inner))
        auth = McpAuth(agent, "task-token", "tools", session="lookup", constraints=lambda tool, args: {"amount_max": args["amount"]} if tool == "transfer" else None)
        async with httpx.AsyncClient(transport=McpTransport(auth, inner)) as http:
            refused = await http.post(mcp_url(agent, "tools"), json=call)
            assert refused.status_code == 200
            error = refused.json()
            assert error["id"] == 7 and error["error"]["code"] == -32003
            assert error["error"]["data"]["error"] == "invalid_authorization_details" and "wider" in error["error"]["message"]
            # A notification has no id to answer: its refusal is raised.
            with pytest.raises(PolicyRefusalError):
                await http.post(mcp_url(agent, "tools"), json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            ok = await http.post(mcp_url(agent, "tools"), json={**call, "id": 8, "params": {"name": "lookup", "arguments": {}}})
            assert ok.json()["result"] == {} and ok.request.headers["authorization"] == "Bearer at-1"

    asyncio.run(run())
    assert [request.url.host for request in server.seen] == ["writ.example", "writ.example", "writ.example", "gw.example"]  # nothing sent for a refusal


def test_async_a_shared_exchange_stops_when_every_caller_is_cancelled():
    # As in TypeScript: one caller's cancellation ends only its own wait; when every caller waiting for an exchange
    # (here: for a human approval) is cancelled, the exchange stops polling instead of going on in the background.
    pending: Answer = (400, {"error": "authorization_pending", "approval_id": "ap-1", "interval": 0.2}, {})
    server = Scripted([pending] * 20 + [issued("at-1")])

    async def run() -> tuple[int, str]:
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.AsyncClient(transport=httpx.MockTransport(server)))
        first = asyncio.ensure_future(agent.credential("t", "payments", "payouts.create"))
        second = asyncio.ensure_future(agent.credential("t", "payments", "payouts.create"))
        await asyncio.sleep(0.3)
        first.cancel()
        await asyncio.sleep(0.3)
        assert not second.done()  # the exchange goes on for the caller still waiting
        second.cancel()
        for cancelled in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await cancelled
        polls = len(server.tokens())
        await asyncio.sleep(0.6)
        return len(server.tokens()) - polls, repr(agent._inflight)

    polled_after, inflight = asyncio.run(run())
    assert polled_after == 0 and inflight == "{}"
