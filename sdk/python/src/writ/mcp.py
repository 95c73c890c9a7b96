"""MCP through the Writ gateway: an ``httpx.Auth`` for an MCP client (Streamable HTTP) on an ``mcp`` connector.

Each ``tools/call`` goes out with a credential for exactly that tool (and the constraints ``constraints`` derives
from its arguments); session traffic (``initialize``, ``tools/list``, notifications, the event stream, session end)
with the credential of ``session``, of which the gateway spends no use. A credential the gateway refuses (401 with
its ``invalid_token`` challenge: spent, revoked; nothing was forwarded) is dropped and the request sent once more with
a new one; any other 401 is the upstream's answer and is returned::

    auth = McpAuth(agent, task.task_token, "tools", session="lookup",
                   constraints=lambda tool, args: {"to": args["to"], "amount_max": args["amount"]} if tool == "transfer" else None)
    async with httpx.AsyncClient(transport=McpTransport(auth), timeout=httpx.Timeout(30, read=300)) as http, \
            streamable_http_client(mcp_url(agent, "tools"), http_client=http) as (r, w, _):
        ...

``McpTransport`` answers a request whose credential Writ refuses (a ``tools/call`` wider than the task) with a
JSON-RPC error, so that the call fails and the session goes on; as the client's ``auth`` alone, ``McpAuth`` raises
the refusal (``PolicyRefusalError``) inside the MCP client, which ends the session.
"""

from __future__ import annotations

import json
from typing import Any, AsyncGenerator, Callable, Mapping

import httpx

from . import _core
from .aio import AsyncAgent
from .errors import GatewayPathError, WritError, WritOAuthError

# The JSON-RPC error code of the gateway's refusals of one MCP request (the implementation-defined server range).
MCP_REFUSED = -32003


def mcp_url(agent: AsyncAgent, connector: str) -> str:
    """The gateway URL of an ``mcp`` connector: the MCP endpoint the client connects to."""
    return _core.gateway_url_for(agent.gateway_url, connector, "/").rstrip("/")


class McpAuth(httpx.Auth):
    """Adds the right Writ credential (and DPoP proof) to each request of an MCP client, sent to the connector's
    MCP URL (``mcp_url``) and nowhere else: any other URL raises ``GatewayPathError`` before a credential exists."""

    def __init__(self, agent: AsyncAgent, task_token: str, connector: str, *, session: str,
                 session_constraints: Mapping[str, Any] | None = None,
                 constraints: Callable[[str, dict[str, Any]], Mapping[str, Any] | None] | None = None) -> None:
        self._agent = agent
        self._task_token = task_token
        self._connector = connector
        # The one URL its credentials may go to (the client may be used for other requests too).
        self._url = mcp_url(agent, connector)
        self._session = (session, session_constraints)
        self._constraints = constraints

    def _request_of(self, request: httpx.Request) -> tuple[str, Mapping[str, Any] | None]:
        try:
            message = json.loads(request.content) if request.content else None
        except ValueError:
            message = None
        params = message.get("params") if isinstance(message, dict) else None
        if isinstance(message, dict) and message.get("method") == "tools/call" and isinstance(params, dict) and isinstance(params.get("name"), str):
            tool = params["name"]
            args = params.get("arguments") if isinstance(params.get("arguments"), dict) else {}
            return tool, self._constraints(tool, args) if self._constraints else None
        return self._session

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if str(request.url.copy_with(query=None, fragment=None)) != self._url:
            raise GatewayPathError(f"McpAuth sends credentials to {self._url} only, not to {request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}{request.url.path}")
        await request.aread()
        action, constraints = self._request_of(request)
        url = str(request.url.copy_with(query=None))
        dpop = self._agent._dpop
        refreshed = nonce_sent = False
        # One credential for every attempt of this request (the gateway's nonce): only its refusal gets a new one, once.
        credential = await self._agent.credential(self._task_token, self._connector, action, constraints)
        while True:
            for name in ("authorization", "dpop"):
                request.headers.pop(name, None)
            request.headers.update(_core.auth_headers(credential, dpop, request.method, url, self._agent._client.now()))
            response = yield request
            if dpop is not None:
                dpop.remember_nonce(url, response)
            if credential.token_type == "DPoP" and not nonce_sent and response.status_code == 401 and _core.is_nonce_error(response):
                nonce_sent = True  # RFC 9449 §9: the same credential, a proof with the gateway's nonce
                continue
            if not _core.is_refused_credential(response) or refreshed:
                return  # an upstream's 401 (no gateway challenge) is an answer: that request reached it
            refreshed = True
            credential = await self._agent._replace(self._task_token, self._connector, action, constraints)

    def sync_auth_flow(self, request: httpx.Request):  # noqa: ANN201 - MCP clients are async
        raise RuntimeError("McpAuth works with httpx.AsyncClient (MCP clients are async)")


def _refusal_answer(request: httpx.Request, error: WritError) -> httpx.Response | None:
    """The JSON-RPC error answering a request whose credential Writ refused, as the gateway answers a call outside a
    grant; ``None`` when the request is not one a JSON-RPC error can answer (a notification, the event stream)."""
    try:
        message = json.loads(request.content) if request.content else None
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return None
    request_id = message.get("id")
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool):
        return None
    body = error.body if isinstance(error, WritOAuthError) else {"error": error.code, "error_description": str(error)}
    answer = {"jsonrpc": "2.0", "id": request_id, "error": {"code": MCP_REFUSED, "message": f"Writ refused this request: {error}", "data": body}}
    return httpx.Response(200, json=answer, request=request)


class McpTransport(httpx.AsyncBaseTransport):
    """An ``httpx`` transport for an MCP client: ``McpAuth``'s credentials on every request, and a request whose
    credential Writ refuses (the policy's refusal of a ``tools/call`` whose constraints came from its arguments, a
    task that is over) answered with a JSON-RPC error (code ``-32003``, ``data`` the server's error body) instead of
    an exception: the MCP client runs each request in a task group that a raised error ends, whole session and all.
    Nothing is sent for a refused request. ``transport`` is the one underneath (default ``httpx.AsyncHTTPTransport()``)::

        async with httpx.AsyncClient(transport=McpTransport(auth)) as http, streamable_http_client(url, http_client=http) as (r, w, _):
            ...
    """

    def __init__(self, auth: McpAuth, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._auth = auth
        self._transport = transport or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        flow = self._auth.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                response = await self._transport.handle_async_request(outgoing)
                try:
                    outgoing = await flow.asend(response)
                except StopAsyncIteration:
                    return response
                await response.aclose()
        except WritError as error:
            if isinstance(error, GatewayPathError):
                raise
            answer = _refusal_answer(request, error)
            if answer is None:
                raise
            return answer

    async def aclose(self) -> None:
        await self._transport.aclose()
