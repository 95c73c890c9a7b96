"""A broken or hostile authorization server, and many callers at once: an answer without end (or one that drips)
must not fill the agent's memory or hold it past its timeout; concurrent identical one-use writes each get the
replacement they need while the orchestrator's token is replaced once; discovery follows RFC 8414 §3.1 for an issuer
with a path and fails the same way as in TypeScript."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import httpx
import pytest

from writ import Agent, AsyncAgent, Orchestrator, WritResponseError, WritTimeoutError
import writ
from writ import _core

from test_resilience import GATEWAY, ISSUER, private_jwk

READ = ("payments", "payouts.get")


class RefusingFirstToken:
    """Writ whose token endpoint issues ``<prefix>-1``, ``<prefix>-2``… (slowly, so that concurrent callers overlap an
    exchange) and whose Tasks API refuses the first one (401)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.exchanges: list[str] = []
        self.refusals = 0
        self.lock = threading.Lock()

    def answer(self, request: httpx.Request) -> tuple[httpx.Response, float]:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"}), 0.0
        if request.url.path == "/oauth2/token":
            with self.lock:
                token = f"{self.prefix}-{len(self.exchanges) + 1}"
                self.exchanges.append(token)
            return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": 120}), 0.1
        if request.headers["authorization"].endswith(f"{self.prefix}-1"):
            # Staggered: some refusals arrive while the replacement is under way, some after it was obtained.
            with self.lock:
                self.refusals += 1
                delay = 0.08 * self.refusals
            return httpx.Response(401, headers={"www-authenticate": 'Bearer error="invalid_token"'}), delay
        return httpx.Response(200, json={"ok": True}), 0.05

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response, delay = self.answer(request)
        time.sleep(delay)
        return response


def in_threads(count: int, work: Any) -> list[Any]:
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


class OneUse:
    """Writ whose token endpoint issues ``at-1``, ``at-2``… (slowly) and whose gateway accepts each credential once, as
    it does a write's (one-use by default): a second use is refused with its ``invalid_token`` challenge."""

    def __init__(self) -> None:
        self.exchanges = 0
        self.used: set[str] = set()
        self.lock = threading.Lock()

    def answer(self, request: httpx.Request) -> tuple[httpx.Response, float]:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"}), 0.0
        with self.lock:
            if request.url.path == "/oauth2/token":
                self.exchanges += 1
                return httpx.Response(200, json={"access_token": f"at-{self.exchanges}", "token_type": "Bearer", "expires_in": 120}), 0.1
            token = request.headers["authorization"]
            if token in self.used:
                return httpx.Response(401, headers={"www-authenticate": 'Bearer error="invalid_token", error_description="spent"'}), 0.02
            self.used.add(token)
        return httpx.Response(200, json={"ok": True}), 0.02

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response, delay = self.answer(request)
        time.sleep(delay)
        return response

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        response, delay = self.answer(request)
        await asyncio.sleep(delay)
        return response


WRITE = ("payments", "payouts.create")
WRITE_CONSTRAINTS = {"destination": "acct_1"}


def test_concurrent_identical_one_use_writes_each_get_their_own_replacement():
    server = OneUse()
    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(server)))
    statuses = in_threads(4, lambda _: agent.fetch("t", *WRITE, "/v1/payouts", constraints=WRITE_CONSTRAINTS, json={"destination": "acct_1"}).status_code)
    assert statuses == [200] * 4  # as in TypeScript: a refused call never shares its replacement with another


def test_async_concurrent_identical_one_use_writes_each_get_their_own_replacement():
    server = OneUse()

    async def run() -> list[int]:
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False,
                           http=httpx.AsyncClient(transport=httpx.MockTransport(server.handle_async)))
        answers = await asyncio.gather(*(agent.fetch("t", *WRITE, "/v1/payouts", constraints=WRITE_CONSTRAINTS, json={"destination": "acct_1"})
                                         for _ in range(4)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(run()) == [200] * 4


def test_an_orchestrator_token_refused_to_concurrent_calls_is_replaced_once():
    server = RefusingFirstToken("tasks")
    orchestrator = Orchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.Client(transport=httpx.MockTransport(server)))
    in_threads(4, lambda index: orchestrator.get_task(f"t{index}"))
    assert server.exchanges == ["tasks-1", "tasks-2"]


@pytest.fixture
def hostile() -> Iterator[dict[str, Any]]:
    """A real HTTP server: discovery is fine; the token endpoint streams a JSON string for ever (``endless``) or drips
    a byte every 0.1 s for 6 s before it ends a valid answer (``drip``)."""
    state: dict[str, Any] = {"mode": "endless"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = ('{"issuer": "%s", "token_endpoint": "%s/oauth2/token"}' % (state["url"], state["url"])).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("connection", "close")
            self.end_headers()
            try:
                self.wfile.write(b'{"token_type": "Bearer", "access_token": "')
                if state["mode"] == "endless":
                    chunk = b"x" * 65536
                    while True:
                        self.wfile.write(chunk)
                else:
                    for _ in range(60):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                    self.wfile.write(b'"}')
            except (BrokenPipeError, ConnectionResetError):
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_an_answer_without_end_is_cut_off(hostile):
    agent = Agent(hostile["url"], "agent-1", private_jwk(), GATEWAY, dpop=False, allow_insecure_requests=True, timeout=20)
    started = time.monotonic()
    with pytest.raises(WritResponseError, match=f"{writ.MAX_ANSWER_BYTES} bytes"):
        agent.credential("t", *READ)
    assert time.monotonic() - started < 10


def test_async_an_answer_without_end_is_cut_off(hostile):
    async def run() -> None:
        agent = AsyncAgent(hostile["url"], "agent-1", private_jwk(), GATEWAY, dpop=False, allow_insecure_requests=True, timeout=20)
        with pytest.raises(WritResponseError, match=f"{_core.MAX_ANSWER_BYTES} bytes"):
            await agent.credential("t", *READ)

    asyncio.run(run())


def test_an_answer_that_drips_fails_after_the_timeout(hostile):
    # Each byte comes well within the read timeout: only a deadline on the whole answer ends it.
    hostile["mode"] = "drip"
    agent = Agent(hostile["url"], "agent-1", private_jwk(), GATEWAY, dpop=False, allow_insecure_requests=True, timeout=1)
    started = time.monotonic()
    with pytest.raises(WritTimeoutError):
        agent.credential("t", *READ)
    assert time.monotonic() - started < 4


def test_async_an_answer_that_drips_fails_after_the_timeout(hostile):
    hostile["mode"] = "drip"

    async def run() -> None:
        agent = AsyncAgent(hostile["url"], "agent-1", private_jwk(), GATEWAY, dpop=False, allow_insecure_requests=True, timeout=1)
        with pytest.raises(WritTimeoutError):
            await agent.credential("t", *READ)

    started = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - started < 4


def test_an_issuer_with_a_path_is_discovered_at_the_rfc_8414_location():
    issuer = "https://writ.example/tenant-a"
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/.well-known/oauth-authorization-server/tenant-a":
            return httpx.Response(200, json={"issuer": issuer, "token_endpoint": f"{issuer}/oauth2/token"})
        if request.url.path == "/tenant-a/oauth2/token":
            return httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 60})
        return httpx.Response(404)

    agent = Agent(issuer, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(handler)))
    assert agent.credential("t", *READ).access_token == "at"
    assert seen[0] == "/.well-known/oauth-authorization-server/tenant-a"

    async def run() -> str:
        async_agent = AsyncAgent(issuer, "agent-1", private_jwk(), GATEWAY, dpop=False,
                                 http=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        return (await async_agent.credential("t", *READ)).access_token

    assert asyncio.run(run()) == "at"


def test_concurrent_async_callers_share_one_discovery():
    discoveries: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            discoveries.append(request.url.path)
            await asyncio.sleep(0.05)
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        return httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 60})

    async def run() -> None:
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        await asyncio.gather(*(agent.credential("t", "payments", f"action.{n}") for n in range(4)))

    asyncio.run(run())
    assert len(discoveries) == 1


def test_concurrent_threads_share_one_discovery():
    discoveries: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            discoveries.append(request.url.path)
            time.sleep(0.05)
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        return httpx.Response(200, json={"access_token": "at", "token_type": "Bearer", "expires_in": 60})

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(handler)))
    in_threads(4, lambda index: agent.credential("t", "payments", f"action.{index}"))
    assert len(discoveries) == 1


def test_concurrent_identical_mcp_tool_calls_each_get_their_own_replacement():
    from writ.mcp import McpAuth, mcp_url

    server = OneUse()
    call = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "transfer", "arguments": {"to": "acct_1"}}}

    async def run() -> list[int]:
        transport = httpx.MockTransport(server.handle_async)
        agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.AsyncClient(transport=transport))
        auth = McpAuth(agent, "t", "tools", session="lookup", constraints=lambda tool, args: {"to": args["to"]})
        async with httpx.AsyncClient(auth=auth, transport=transport) as http:
            answers = await asyncio.gather(*(http.post(mcp_url(agent, "tools"), json={**call, "id": n}) for n in range(4)))
        return [answer.status_code for answer in answers]

    assert asyncio.run(run()) == [200] * 4


@pytest.mark.parametrize("answer, why", [
    (lambda: httpx.Response(200, json={"issuer": "https://attacker.example", "token_endpoint": "https://attacker.example/token"}), "issuer"),
    (lambda: httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": "http://writ.example/oauth2/token"}), "https"),
    (lambda: httpx.Response(404, text="not here"), "404"),
    (lambda: httpx.Response(302, headers={"location": "https://attacker.example/.well-known/oauth-authorization-server"}), "302"),
    (lambda: httpx.Response(503, json={"error": "temporarily_unavailable"}, headers={"retry-after": "3600"}), "503"),
], ids=["another issuer", "http token endpoint", "404", "redirect", "unavailable"])
def test_a_failed_discovery_is_discovery_failed_naming_why_as_in_typescript(answer, why):
    from writ import WritError

    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answer()

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(WritError) as raised:
        agent.credential("secret-task-token", *READ)
    assert raised.value.code == "discovery_failed" and why in str(raised.value)
    assert "secret-task-token" not in str(raised.value)
    assert seen == ["/.well-known/oauth-authorization-server"]  # the task token was never sent

    async def run() -> WritError:
        async_agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False,
                                 http=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        with pytest.raises(WritError) as raised_async:
            await async_agent.credential("secret-task-token", *READ)
        return raised_async.value

    assert asyncio.run(run()).code == "discovery_failed"


def test_an_unreachable_server_is_discovery_failed_as_in_typescript():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(_core.WritError) as raised:
        agent.credential("t", *READ)
    assert raised.value.code == "discovery_failed" and isinstance(raised.value.__cause__, httpx.ConnectError)


class RefusingClient:
    """A token endpoint that refuses the client (``invalid_client``), slowly; counts the requests."""

    def __init__(self) -> None:
        self.tokens = 0

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        self.tokens += 1
        return httpx.Response(401, json={"error": "invalid_client", "error_description": "unknown key"})

    def __call__(self, request: httpx.Request) -> httpx.Response:
        time.sleep(0.1 if request.url.path == "/oauth2/token" else 0)
        return self.answer(request)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.1 if request.url.path == "/oauth2/token" else 0)
        return self.answer(request)


def test_threads_share_one_failed_orchestrator_token_request():
    from writ import InvalidClientError

    server = RefusingClient()
    orchestrator = Orchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.Client(transport=httpx.MockTransport(server)))

    def get(index: int) -> Any:
        try:
            return orchestrator.get_task(f"t{index}")
        except InvalidClientError as error:
            return error

    assert all(isinstance(outcome, InvalidClientError) for outcome in in_threads(4, get))
    assert server.tokens == 1  # as in TypeScript: the callers waiting for it share its failure


def test_async_callers_share_one_failed_orchestrator_token_request():
    from writ import AsyncOrchestrator, InvalidClientError

    server = RefusingClient()

    async def run() -> list[Any]:
        orchestrator = AsyncOrchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.AsyncClient(transport=httpx.MockTransport(server.handle_async)))
        return await asyncio.gather(*(orchestrator.get_task(f"t{n}") for n in range(4)), return_exceptions=True)

    assert all(isinstance(outcome, InvalidClientError) for outcome in asyncio.run(run()))
    assert server.tokens == 1


@pytest.mark.parametrize("answer", [
    {"access_token": "at-secret-value", "token_type": "Bearer", "expires_in": 120},
    {"access_token": "at-secret-value", "expires_in": 120},
], ids=["a bearer token", "no token_type"])
def test_a_downgraded_dpop_request_is_refused_and_the_token_never_sent_nor_shown(answer):
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        return httpx.Response(200, json=answer)

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(_core.WritError) as raised:
        agent.fetch("t", *READ, "/v1/payouts/po_1")
    assert raised.value.code == "unexpected_response"
    error: BaseException | None = raised.value
    while error is not None:  # the whole chain, as a traceback or an error reporter shows it
        assert "at-secret-value" not in f"{error!r} {error}"
        error = error.__cause__ or error.__context__
    assert [url for url in seen if url.startswith(GATEWAY)] == []


def test_a_credential_close_to_its_expiry_is_refreshed_once_for_concurrent_callers():
    issued: list[str] = []
    lock = threading.Lock()

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        with lock:
            issued.append(f"at-{len(issued) + 1}")
            token = issued[-1]
        return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": 1.5})

    def handler(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)
        return answer(request)

    async def handle_async(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.05)
        return answer(request)

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(handler)))
    assert agent.credential("t", *READ).access_token == "at-1"
    time.sleep(0.6)  # past its refresh point (1 s before it expires), still valid
    assert in_threads(4, lambda _: agent.credential("t", *READ).access_token) == ["at-2"] * 4

    async def run() -> list[str]:
        async_agent = AsyncAgent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.AsyncClient(transport=httpx.MockTransport(handle_async)))
        await async_agent.credential("t", *READ)
        await asyncio.sleep(0.6)
        return [credential.access_token for credential in await asyncio.gather(*(async_agent.credential("t", *READ) for _ in range(4)))]

    assert asyncio.run(run()) == ["at-4"] * 4
    assert len(issued) == 4


def test_a_tasks_api_answer_that_is_not_json_is_unexpected_response_as_in_typescript():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        if request.url.path == "/oauth2/token":
            return httpx.Response(200, json={"access_token": "tasks-1", "token_type": "Bearer", "expires_in": 120})
        return httpx.Response(200, text="<html>a proxy page</html>", headers={"content-type": "text/html"})

    orchestrator = Orchestrator(ISSUER, "orch-1", private_jwk(), http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(WritResponseError) as raised:
        orchestrator.get_task("t1")
    assert raised.value.code == "unexpected_response" and raised.value.status == 200


@pytest.mark.parametrize("expires_in, seconds", [('"60"', 60), ('"90.5"', 90.5), ('" 45 "', 45)])
def test_an_expires_in_given_as_a_numeric_string_is_read_as_in_typescript(expires_in, seconds):
    # oauth4webapi (hence the TypeScript SDK) reads a string expires_in with parseFloat; "soon" stays refused.
    text = '{"access_token": "at-1", "token_type": "Bearer", "expires_in": %s}' % expires_in

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        return httpx.Response(200, content=text, headers={"content-type": "application/json"})

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(handler)))
    credential = agent.credential("t", *READ)
    assert seconds - 2 < credential.expires_at - time.time() <= seconds


@pytest.mark.parametrize("text", ['{"token_type": "Bearer"}', '{"access_token": "at-1", "token_type": "mac"}', "[]"],
                         ids=["no access_token", "an unsupported token_type", "not an object"])
def test_a_malformed_token_answer_is_unexpected_response_with_its_status_as_in_typescript(text):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})
        return httpx.Response(200, content=text, headers={"content-type": "application/json"})

    agent = Agent(ISSUER, "agent-1", private_jwk(), GATEWAY, dpop=False, http=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(WritResponseError) as raised:
        agent.credential("t", *READ)
    assert raised.value.code == "unexpected_response" and raised.value.status == 200


@pytest.mark.parametrize("alg", ["none", "HS256", "ES999"])
def test_a_client_key_without_an_asymmetric_alg_is_refused_before_anything_is_signed(alg):
    # As in TypeScript: an "alg": "none" key would otherwise sign unsigned client assertions and send them.
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": f"{ISSUER}/oauth2/token"})

    with pytest.raises(_core.WritError) as raised:
        Agent(ISSUER, "agent-1", {**private_jwk(), "alg": alg}, GATEWAY, http=httpx.Client(transport=httpx.MockTransport(handler)))
    assert raised.value.code == "invalid_key"
    assert sent == []
