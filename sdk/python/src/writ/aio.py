"""Asynchronous clients: ``AsyncOrchestrator`` and ``AsyncAgent`` (httpx), the same surface as the sync ones
(``client.py``); keep the two in step."""

from __future__ import annotations

import contextlib
import asyncio
import inspect
import time
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping, TypeVar

import httpx

from . import _core
from ._core import ClientKey, CreatedTask, Credential, DPoPKey, PendingApproval, PollState
from .errors import WritTimeoutError

T = TypeVar("T")


class _AsyncClient:
    def __init__(self, issuer: str, client_id: str, key: Mapping[str, Any], *, http: httpx.AsyncClient | None,
                 allow_insecure_requests: bool, timeout: float = _core.DEFAULT_TIMEOUT) -> None:
        self.issuer = _core.check_base_url(issuer, allow_insecure_requests, "issuer")
        self._allow_insecure = allow_insecure_requests
        self.client_id = client_id
        self._key = ClientKey.from_jwk(key)
        # ``timeout`` (seconds, default 30) bounds connecting and each read and write of every request, the gateway's
        # included: a hung server fails the call instead of hanging the agent. A given ``http`` keeps its own.
        self._http = http or httpx.AsyncClient(timeout=_core.check_timeout(timeout), follow_redirects=False)
        self._owns_http = http is None
        self._metadata: dict[str, Any] | None = None
        self._discovery = asyncio.Lock()  # concurrent first callers share one discovery
        self._skew = 0.0  # the server's clock minus ours (its Date at discovery), when it is off by more than 5 s

    async def close(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            async with self._discovery:
                if self._metadata is None:
                    url = _core.metadata_url(self.issuer)
                    try:
                        response = await self.send(lambda: self._http.build_request("GET", url))
                    except httpx.TransportError as error:
                        if isinstance(error, httpx.TimeoutException):
                            raise  # a WritTimeoutError, as in TypeScript
                        raise _core.discovery_failed(self.issuer, error) from error
                    metadata = _core.discovered(response, self.issuer, self._allow_insecure)
                    self._skew = _core.server_skew(response)
                    self._metadata = metadata
        return self._metadata

    def now(self) -> float:
        """The time on the server's clock, for ``iat``/``exp`` of assertions and proofs."""
        return time.time() + self._skew

    async def send(self, build: Callable[[], httpx.Request]) -> httpx.Response:
        """The request ``build()`` makes (to the authorization server; never redirected), sent again while the answer is
        a 429/503 worth retrying (``_core.retry_delay``); no answer within the timeout is ``WritTimeoutError``, as at the
        gateway. The answer is read whole within the timeout and at most ``_core.MAX_ANSWER_BYTES``."""
        attempt = 0
        while True:
            try:
                started = time.monotonic()
                answer = await self._http.send(build(), stream=True, follow_redirects=False)
                try:
                    body = _core.BoundedAnswer(answer, self._http.timeout.read, started)
                    async for chunk in answer.aiter_bytes():
                        body.add(chunk)
                finally:
                    await answer.aclose()
            except httpx.TimeoutException as error:
                if isinstance(error, WritTimeoutError):
                    raise
                raise _core.server_timeout("the authorization server", error, self._http.timeout.read) from error
            response = body.answer()
            delay = _core.retry_delay(response, attempt)
            if delay is None:
                return response
            attempt += 1
            await asyncio.sleep(delay)

    async def token(self, params: dict[str, str], dpop: DPoPKey | None = None) -> dict[str, Any]:
        """A token endpoint request (a fresh assertion and proof per attempt): 429/503 retried after ``Retry-After``,
        one more attempt with the DPoP nonce the server asks for (``use_dpop_nonce``)."""
        endpoint = (await self.metadata())["token_endpoint"]

        def post() -> Any:
            return _core.post_token_request(self._http, endpoint, params, dpop, self._key, self.client_id, self.issuer, self.now())

        for attempt in range(2):
            response = await self.send(post)
            if dpop is not None:
                dpop.remember_nonce(endpoint, response)
                if attempt == 0 and _core.is_nonce_error(response):
                    continue
            return _core.raise_for_answer(response)
        raise AssertionError("unreachable")


class AsyncOrchestrator:
    """A trusted orchestrator: declares tasks for its agents and always ends them (``run_task``, ``task``)."""

    def __init__(self, issuer: str, client_id: str, key: Mapping[str, Any], *, http: httpx.AsyncClient | None = None,
                 allow_insecure_requests: bool = False, timeout: float = _core.DEFAULT_TIMEOUT) -> None:
        self._client = _AsyncClient(issuer, client_id, key, http=http, allow_insecure_requests=allow_insecure_requests, timeout=timeout)
        self._token: tuple[str, float] | None = None
        self._inflight: asyncio.Future[str] | None = None  # the token request under way, shared by concurrent callers

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncOrchestrator":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _access_token(self) -> str:
        """The Tasks API token, cached until shortly before it expires. Concurrent callers share one request for it,
        and its failure, as in TypeScript; a caller's cancellation ends only its own wait."""
        if self._token and time.time() < self._token[1]:
            return self._token[0]
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch_token())
            self._inflight.add_done_callback(self._settled)
        return await asyncio.shield(self._inflight)

    async def _fetch_token(self) -> str:
        access_token, _, lifetime = _core.token_response(await self._client.token({"grant_type": "client_credentials", "scope": "tasks"}))
        # An expires_in of 0 is used for the calls that asked for it and not reused (the clamp is token_response's).
        self._token = (access_token, _core.refresh_at_for(time.time(), lifetime))
        return access_token

    def _settled(self, done: asyncio.Future[str]) -> None:
        if self._inflight is done:
            self._inflight = None
        if not done.cancelled():
            done.exception()  # retrieved: a failure no caller waited for is not logged as never retrieved

    async def _call(self, method: str, path: str, body: Any = None, extra_headers: Mapping[str, str] | None = None) -> dict[str, Any]:
        for attempt in range(2):
            access_token = await self._access_token()
            headers = {"authorization": f"Bearer {access_token}", "accept": "application/json", **(extra_headers or {})}
            url = f"{self._client.issuer}{path}"
            response = await self._client.send(lambda: self._client._http.build_request(method, url, headers=headers, json=body))
            if response.status_code == 401 and attempt == 0:
                if self._token and self._token[0] == access_token:  # only the refused token: concurrent calls share its replacement
                    self._token = None
                continue
            return _core.raise_for_answer(response)
        raise AssertionError("unreachable")

    async def create_task(self, agent_id: str, purpose: str, allowed: list[Mapping[str, Any]], ttl_seconds: int, *,
                    on_behalf_of: str | None = None, metadata: Mapping[str, Any] | None = None,
                    user_token: str | None = None, user: Mapping[str, str] | None = None) -> CreatedTask:
        """``POST /v1/tasks``: declares a task; returns its id and task token. ``user_token`` (the user's
        token from a registered identity provider) or ``user`` (``{"iss", "sub"}``, for an orchestrator
        trusted to assert users) makes the task act for that verified user."""
        body = _core.task_body(agent_id, purpose, allowed, ttl_seconds, on_behalf_of, metadata, user_token=user_token, user=user)
        # One key for every attempt of this declaration: a retry after a lost answer gets the same task.
        created = await self._call("POST", "/v1/tasks", body, {"idempotency-key": str(uuid.uuid4())})
        return CreatedTask(created["task_id"], created["task_token"], created["expires_at"], created["status"])

    async def get_task(self, task_id: str) -> dict[str, Any]:
        """``GET /v1/tasks/{id}``: the task, its status and its grants."""
        return await self._call("GET", f"/v1/tasks/{_core.path_segment(task_id)}")

    async def complete_task(self, task_id: str) -> dict[str, Any]:
        """Completes the task; its credentials are revoked before this returns."""
        return await self._call("POST", f"/v1/tasks/{_core.path_segment(task_id)}/complete")

    async def fail_task(self, task_id: str) -> dict[str, Any]:
        """Fails the task; its credentials are revoked before this returns."""
        return await self._call("POST", f"/v1/tasks/{_core.path_segment(task_id)}/fail")

    @contextlib.asynccontextmanager
    async def task(self, agent_id: str, purpose: str, allowed: list[Mapping[str, Any]], ttl_seconds: int, **options: Any) -> AsyncIterator[CreatedTask]:
        """``async with orchestrator.task(...) as task:`` completes on a normal exit, fails on any exception or cancellation (in a ``finally``)."""
        created = await self.create_task(agent_id, purpose, allowed, ttl_seconds, **options)
        completed = False
        try:
            yield created
            await self.complete_task(created.task_id)
            completed = True
        finally:
            if not completed:
                # A failure to fail must not hide the work's own error; the task still expires at its deadline.
                # Shielded: a cancelled run still revokes its credentials.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.fail_task(created.task_id))

    async def run_task(self, work: Callable[[CreatedTask], Awaitable[T]], agent_id: str, purpose: str, allowed: list[Mapping[str, Any]],
                 ttl_seconds: int, **options: Any) -> T:
        """Declares a task, runs ``work(task)``, completes it when ``work`` returns, fails it when it raises."""
        async with self.task(agent_id, purpose, allowed, ttl_seconds, **options) as created:
            return await work(created)


class AsyncAgent:
    """An agent: token exchange for one operation on one connector (DPoP-bound by default), cached, approval-aware."""

    def __init__(self, issuer: str, client_id: str, key: Mapping[str, Any], gateway_url: str, *, dpop: bool = True,
                 approval_timeout: float = _core.DEFAULT_APPROVAL_TIMEOUT, http: httpx.AsyncClient | None = None,
                 allow_insecure_requests: bool = False, timeout: float = _core.DEFAULT_TIMEOUT) -> None:
        self._client = _AsyncClient(issuer, client_id, key, http=http, allow_insecure_requests=allow_insecure_requests, timeout=timeout)
        self.gateway_url = _core.check_base_url(gateway_url, allow_insecure_requests, "gateway_url")
        self._dpop = DPoPKey() if dpop else None
        self._approval_timeout = approval_timeout
        self._cache: dict[str, Credential] = {}
        self._inflight: dict[str, asyncio.Future[Credential]] = {}
        self._waiting: dict[asyncio.Future[Credential], int] = {}  # callers waiting for each exchange under way

    @property
    def dpop_thumbprint(self) -> str | None:
        return self._dpop.thumbprint if self._dpop else None

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "AsyncAgent":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def for_task(self, task_token: str) -> "AsyncTaskAgent":
        """A handle bound to one task token."""
        return AsyncTaskAgent(self, task_token)

    async def credential(self, task_token: str, connector: str, action: str, constraints: Mapping[str, Any] | None = None, *,
                   approval_timeout: float | None = None, on_pending: Callable[[PendingApproval], Any] | None = None) -> Credential:
        """A credential for exactly this request: cached until shortly before it expires, else by token exchange
        (waiting for a human approval when the policy asks for one). Refusals raise typed errors."""
        detail = _core.detail_of(connector, action, constraints)
        key = f"{task_token}\n{_core.canonical(detail)}"
        cached = self._cache.get(key)
        if cached and time.time() < cached.refresh_at():
            return cached
        # Concurrent identical requests share one exchange (and one approval). A caller's cancellation ends only its
        # own wait; the exchange is cancelled when no caller is left waiting for it (as an abort does in TypeScript).
        inflight = self._inflight.get(key)
        if inflight is None:
            inflight = asyncio.ensure_future(self._exchange(task_token, detail, approval_timeout, on_pending))
            self._inflight[key] = inflight
            exchange = inflight

            def settled(_: object) -> None:
                if self._inflight.get(key) is exchange:
                    del self._inflight[key]
                self._waiting.pop(exchange, None)

            inflight.add_done_callback(settled)
        self._waiting[inflight] = self._waiting.get(inflight, 0) + 1
        try:
            credential = await asyncio.shield(inflight)
        except asyncio.CancelledError:
            if not inflight.done() and inflight in self._waiting:
                self._waiting[inflight] -= 1
                if self._waiting[inflight] == 0:
                    inflight.cancel()
            raise
        else:
            if inflight in self._waiting:
                self._waiting[inflight] -= 1
        if self._cache.get(key) is not credential:
            _core.remember(self._cache, key, credential)
        return credential

    def forget(self, task_token: str, connector: str | None = None, action: str | None = None,
               constraints: Mapping[str, Any] | None = None) -> None:
        """Drops cached credentials: of one request, or every one of a task token."""
        if connector is not None and action is not None:
            self._cache.pop(f"{task_token}\n{_core.canonical(_core.detail_of(connector, action, constraints))}", None)
        else:
            for cached in [k for k in self._cache if k.startswith(f"{task_token}\n")]:
                del self._cache[cached]

    async def _replace(self, task_token: str, connector: str, action: str, constraints: Mapping[str, Any] | None, *,
                 approval_timeout: float | None = None, on_pending: Callable[[PendingApproval], Any] | None = None) -> Credential:
        """A new credential for a call the gateway refused the last one to: its own exchange, never one another call is
        waiting for (a write credential is one-use by default: concurrent identical writes that shared one, spent by the
        first, must each get their own, as in TypeScript). It replaces the cached one."""
        detail = _core.detail_of(connector, action, constraints)
        key = f"{task_token}\n{_core.canonical(detail)}"
        self._cache.pop(key, None)
        credential = await self._exchange(task_token, detail, approval_timeout, on_pending)
        _core.remember(self._cache, key, credential)
        return credential

    async def _exchange(self, task_token: str, detail: dict[str, Any], timeout: float | None,
                  on_pending: Callable[[PendingApproval], Any] | None) -> Credential:
        poll = PollState(self._approval_timeout if timeout is None else timeout)
        while True:
            try:
                body = await self._client.token(_core.exchange_params(task_token, detail, self.gateway_url, poll.approval_id), self._dpop)
                return _core.credential_from(body, detail, self._dpop is not None)
            except Exception as error:  # noqa: BLE001 - PollState re-raises what is not a polling answer
                pending = poll.on_error(error)
                if pending and on_pending:
                    notified = on_pending(pending)
                    if inspect.isawaitable(notified):
                        await notified
                await asyncio.sleep(poll.interval)

    async def fetch(self, task_token: str, connector: str, action: str, path: str, *, constraints: Mapping[str, Any] | None = None,
              method: str | None = None, headers: Mapping[str, str] | None = None, json: Any = None,
              content: bytes | str | None = None, query: Mapping[str, Any] | None = None,
              approval_timeout: float | None = None, on_pending: Callable[[PendingApproval], Any] | None = None,
              timeout: float | None = None) -> httpx.Response:
        """Calls ``path`` (relative to the connector) through the gateway with a credential for this request and a
        fresh DPoP proof. Other targets raise ``GatewayPathError`` before anything is sent. A credential the gateway
        refuses (401: spent, revoked; nothing was forwarded) is dropped and the call made once more. ``timeout``
        (seconds; default the agent's) bounds connecting and each read of the answer: ``WritTimeoutError`` after it."""
        url = _core.gateway_url_for(self.gateway_url, connector, _core.with_query(path, query))
        verb = (method or ("POST" if json is not None or content is not None else "GET")).upper()
        base_headers, body = _core.prepare_call(headers, json, content)
        attempts = _core.GatewayAttempts(verb)
        request_timeout: Any = httpx.USE_CLIENT_DEFAULT if timeout is None else _core.check_timeout(timeout)
        # One credential for every attempt of this call (a nonce, a 429/503 retry): only the gateway's refusal of it gets
        # a new one, once. A credential too short-lived to cache (expires_in: 0) is then one exchange per call.
        credential = await self.credential(task_token, connector, action, constraints, approval_timeout=approval_timeout, on_pending=on_pending)
        while True:
            request_headers = {**base_headers, **_core.auth_headers(credential, self._dpop, verb, url, self._client.now())}
            try:
                # Never follow a redirect: the credential and its proof go to this URL only.
                response = await self._client._http.request(verb, url, headers=request_headers, content=body, follow_redirects=False,
                                                        timeout=request_timeout)
            except httpx.TimeoutException as error:
                seconds = timeout if timeout is not None else self._client._http.timeout.read
                raise _core.gateway_timeout(verb, url, seconds) from error
            if self._dpop is not None:
                self._dpop.remember_nonce(url, response)
            step = attempts.after(credential.token_type, response)
            if step is None:
                return response
            if step == attempts.REFRESH:
                credential = await self._replace(task_token, connector, action, constraints, approval_timeout=approval_timeout, on_pending=on_pending)
            elif isinstance(step, (int, float)):
                await asyncio.sleep(step)


class AsyncTaskAgent:
    """An ``AsyncAgent`` bound to one task token."""

    def __init__(self, agent: AsyncAgent, task_token: str) -> None:
        self.agent = agent
        self.task_token = task_token

    async def credential(self, connector: str, action: str, constraints: Mapping[str, Any] | None = None, **options: Any) -> Credential:
        return await self.agent.credential(self.task_token, connector, action, constraints, **options)

    async def fetch(self, connector: str, action: str, path: str, **options: Any) -> httpx.Response:
        return await self.agent.fetch(self.task_token, connector, action, path, **options)
