"""Unit tests without Writ: token lifetimes (``expires_in``) that cannot make an agent exchange on every attempt or
cache for ever, gateway timeouts against a real server that never answers, one exchange per call."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Iterator

import httpx
import pytest

from writ import Agent, AsyncAgent, Orchestrator, WritError, WritResponseError, WritTimeoutError
from writ import _core

from test_resilience import GATEWAY, ISSUER, Answer, Scripted, private_jwk

READ = ("payments", "payouts.get")
UNAVAILABLE: Answer = (503, {"error": "temporarily_unavailable"}, {"retry-after": "1"})
OK: Answer = (200, {"ok": True}, {})
NONCE: Answer = (401, None, {"www-authenticate": 'DPoP error="use_dpop_nonce", algs="ES256"', "dpop-nonce": "gw-n"})


def issued(token: str, expires_in: Any, token_type: str = "Bearer") -> Answer:
    return (200, {"access_token": token, "token_type": token_type, "expires_in": expires_in}, {})


def agent_for(server: Scripted, dpop: bool = False) -> Agent:
    return Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=dpop, http=httpx.Client(transport=httpx.MockTransport(server)))


@pytest.fixture
def no_sleep(monkeypatch) -> None:
    import writ.client as sync_client

    monkeypatch.setattr(sync_client.time, "sleep", lambda _: None)


def test_an_expires_in_0_credential_serves_its_call_once_and_is_not_cached(no_sleep):
    server = Scripted([issued("at-1", 0), UNAVAILABLE, UNAVAILABLE, OK, issued("at-2", 0), OK])
    agent = agent_for(server)
    assert agent.fetch("t", *READ, "/v1/payouts/po_1").status_code == 200
    assert len(server.tokens()) == 1  # the 503 retries reuse the call's credential
    assert agent.fetch("t", *READ, "/v1/payouts/po_1").status_code == 200
    assert len(server.tokens()) == 2  # never cached: the next call gets its own
    gateway = [request.headers["authorization"] for request in server.seen if request.url.host == "gw.example"]
    assert gateway == ["Bearer at-1", "Bearer at-1", "Bearer at-1", "Bearer at-2"]


def test_an_expires_in_0_credential_survives_the_gateways_nonce_request():
    server = Scripted([issued("at-1", 0, "DPoP"), NONCE, OK])
    assert agent_for(server, dpop=True).fetch("t", *READ, "/v1/payouts/po_1").status_code == 200
    assert len(server.tokens()) == 1


def test_a_refused_zero_lifetime_credential_is_refreshed_once_per_call():
    refused: Answer = (401, {"error": "invalid_token"}, {"www-authenticate": 'Bearer error="invalid_token"'})
    server = Scripted([issued("at-1", 0), refused, issued("at-2", 0), refused])
    assert agent_for(server).fetch("t", *READ, "/v1/payouts/po_1").status_code == 401
    assert len(server.tokens()) == 2 and len(server.seen) == 4


def test_threads_share_one_exchange_of_a_credential_too_short_lived_to_cache():
    server = Scripted([issued("at-1", 0)], delay=0.2)
    agent = agent_for(server)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(agent.credential("t", *READ).access_token)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == ["at-1"] * 3 and len(server.tokens()) == 1


def test_mcp_auth_keeps_a_zero_lifetime_credential_across_the_nonce():
    from writ.mcp import McpAuth, mcp_url

    server = Scripted([issued("at-1", 0, "DPoP"), NONCE, (200, {"jsonrpc": "2.0", "id": 1, "result": {}}, {})])

    async def run() -> int:
        transport = httpx.MockTransport(server)
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, http=httpx.AsyncClient(transport=transport))
        async with httpx.AsyncClient(auth=McpAuth(agent, "task-token", "tools", session="lookup"), transport=transport) as http:
            return (await http.post(mcp_url(agent, "tools"), json={"jsonrpc": "2.0", "id": 1, "method": "initialize"})).status_code

    assert asyncio.run(run()) == 200
    assert len(server.tokens()) == 1
    assert len([request for request in server.seen if request.url.host == "gw.example"]) == 2


def test_an_absurd_expires_in_is_clamped_to_a_day():
    server = Scripted([issued("at-1", 1e300), issued("at-2", 10 ** 12)])
    agent = agent_for(server)
    for action in ("payouts.get", "payouts.list"):
        credential = agent.credential("t", "payments", action)
        assert time.time() + _core.MAX_LIFETIME - 60 < credential.expires_at <= time.time() + _core.MAX_LIFETIME


@pytest.mark.parametrize("expires_in", ["1e400", "-1e400", "NaN", "-1", '"soon"', "true"])
def test_an_invalid_expires_in_is_refused_without_the_token(expires_in):
    # As the answer's text: Python's json reads 1e400 as infinity and NaN as a float.
    text = '{"access_token": "at-secret-value", "token_type": "Bearer", "expires_in": %s}' % expires_in

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        return httpx.Response(200, content=text, headers={"content-type": "application/json"})

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(server)))
    with pytest.raises(WritResponseError) as raised:
        agent.credential("t", *READ)
    assert "at-secret-value" not in str(raised.value) and "at-secret-value" not in repr(raised.value)


def test_an_orchestrator_token_with_expires_in_0_is_fetched_once_per_call():
    server = Scripted([issued("tasks-1", 0), (200, {"task_id": "t1"}, {}), issued("tasks-2", 0), (200, {"task_id": "t1"}, {})])
    orchestrator = Orchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.Client(transport=httpx.MockTransport(server)))
    orchestrator.get_task("t1")
    orchestrator.get_task("t1")
    assert [request.headers.get("authorization") for request in server.seen if request.url.path == "/v1/tasks/t1"] == ["Bearer tasks-1", "Bearer tasks-2"]


@pytest.fixture
def hung() -> Iterator[str]:
    """A real server that accepts connections and never answers: a hung gateway or upstream."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


class Routed(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The token endpoint from a script, the gateway over the network (sync and async)."""

    def __init__(self, server: Scripted) -> None:
        self.mock = httpx.MockTransport(server)
        self.sync = httpx.HTTPTransport()
        self.aio = httpx.AsyncHTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return (self.sync if request.url.host == "127.0.0.1" else self.mock).handle_request(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "127.0.0.1":
            return await self.aio.handle_async_request(request)
        return await self.mock.handle_async_request(request)


def test_a_gateway_call_without_an_answer_times_out_per_call(hung):
    server = Scripted([issued("at-1", 120)])
    agent = Agent(ISSUER, "agent-1", private_jwk(), hung, dpop=False, allow_insecure_requests=True,
                  http=httpx.Client(transport=Routed(server), timeout=60))
    started = time.monotonic()
    with pytest.raises(WritTimeoutError) as raised:
        agent.fetch("t", *READ, "/v1/payouts/po_1", query={"secret": "q"}, timeout=0.3)
    assert time.monotonic() - started < 5
    assert isinstance(raised.value, httpx.TimeoutException) and isinstance(raised.value, WritError)
    assert raised.value.code == "timeout" and raised.value.timeout == 0.3
    assert "/connectors/payments/v1/payouts/po_1" in str(raised.value)
    assert "at-1" not in str(raised.value) and "secret" not in str(raised.value)


def test_an_async_gateway_call_without_an_answer_times_out(hung):
    server = Scripted([issued("at-1", 120)])

    async def run() -> None:
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), hung, dpop=False, allow_insecure_requests=True,
                           http=httpx.AsyncClient(transport=Routed(server), timeout=0.3))
        await agent.fetch("t", *READ, "/v1/payouts/po_1")

    with pytest.raises(WritTimeoutError, match="within 0.3 s"):
        asyncio.run(run())


def test_the_timeout_is_configurable_per_client_and_checked():
    assert Agent(ISSUER, "a", private_jwk(), GATEWAY)._client._http.timeout.read == _core.DEFAULT_TIMEOUT == 30.0
    assert Agent(ISSUER, "a", private_jwk(), GATEWAY, timeout=5)._client._http.timeout.read == 5.0
    assert AsyncAgent(ISSUER, "a", private_jwk(), GATEWAY, timeout=5)._client._http.timeout.connect == 5.0
    assert Orchestrator(ISSUER, "o", private_jwk(), timeout=7)._client._http.timeout.read == 7.0
    for bad in (0, -1, float("inf"), "30"):
        with pytest.raises(WritError, match="timeout"):
            Agent(ISSUER, "a", private_jwk(), GATEWAY, timeout=bad)
    server = Scripted([issued("at-1", 120)])
    with pytest.raises(WritError, match="timeout"):
        agent_for(server).fetch("t", *READ, "/v1/payouts/po_1", timeout=0)


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server", "/oauth2/token", "/v1/tasks/t1"])
def test_an_authorization_server_without_an_answer_is_a_timeout_error(path):
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == path:
            raise httpx.ReadTimeout("timed out", request=request)
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        return httpx.Response(200, json={"access_token": "tasks-at", "token_type": "Bearer", "expires_in": 60})

    orchestrator = Orchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.Client(transport=httpx.MockTransport(server), timeout=4))
    with pytest.raises(WritTimeoutError, match=f"no answer from the authorization server to .*{path}.* within 4 s"):
        orchestrator.get_task("t1")

    async def run() -> None:
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.AsyncClient(transport=httpx.MockTransport(server)))
        await agent.credential("t", *READ)

    if path != "/v1/tasks/t1":
        with pytest.raises(WritTimeoutError):
            asyncio.run(run())
