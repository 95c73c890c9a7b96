"""One connector operation as a framework tool sees it: arguments in, a result or a readable refusal out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generic, Mapping, TypeVar

import httpx

from .errors import ToolRefusalError, WritError, WritOAuthError

Args = TypeVar("Args")


@dataclass
class OperationCall:
    """The HTTP request a tool makes through the gateway: ``path`` relative to the connector."""

    path: str
    method: str | None = None
    query: Mapping[str, Any] | None = None
    json: Any = None


@dataclass
class OperationSpec(Generic[Args]):
    """A connector operation a tool wraps: the arguments decide both the grant (constraints) and the call."""

    connector: str
    action: str
    request: Callable[[Args], OperationCall]
    constraints: Callable[[Args], Mapping[str, Any]] | None = None


def _refusal(spec: OperationSpec[Any], error: Exception) -> ToolRefusalError:
    if isinstance(error, WritOAuthError):
        why = "; ".join(error.reasons) if error.reasons else (error.description or error.error)
        return ToolRefusalError(f"Writ refused {spec.action} on {spec.connector} ({error.error}): {why}", error.status, error.reasons)
    return ToolRefusalError(f"Writ refused {spec.action} on {spec.connector}: {error}")


def _result(spec: OperationSpec[Any], response: httpx.Response) -> dict[str, Any]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if response.is_success:
        return {"status": response.status_code, "body": body}
    detail = body if isinstance(body, dict) else {}
    parts = [f"{spec.action} on {spec.connector} failed with {response.status_code}"]
    if isinstance(detail.get("error"), str):
        parts.append(f" {detail['error']}")
    if isinstance(detail.get("rule"), str):
        parts.append(f", rule {detail['rule']}")
    if isinstance(detail.get("error_description"), str):
        parts.append(f": {detail['error_description']}")
    elif isinstance(body, str) and body:
        parts.append(f": {body[:500]}")
    raise ToolRefusalError("".join(parts), response.status_code)


def _call_options(spec: OperationSpec[Any], args: Any) -> tuple[OperationCall, dict[str, Any]]:
    call = spec.request(args)
    constraints = spec.constraints(args) if spec.constraints else None
    return call, {"constraints": constraints, "method": call.method, "json": call.json, "query": call.query}


def run_operation(agent: Any, spec: OperationSpec[Any], args: Any) -> dict[str, Any]:
    """Asks Writ for exactly this operation with the constraints the arguments imply, calls it through the
    gateway (``agent`` is a ``TaskAgent``), returns ``{status, body}`` or raises ``ToolRefusalError``."""
    call, options = _call_options(spec, args)
    try:
        response = agent.fetch(spec.connector, spec.action, call.path, **options)
    except WritError as error:
        raise _refusal(spec, error) from error
    return _result(spec, response)


async def arun_operation(agent: Any, spec: OperationSpec[Any], args: Any) -> dict[str, Any]:
    """``run_operation`` with an ``AsyncTaskAgent``."""
    call, options = _call_options(spec, args)
    try:
        response = await agent.fetch(spec.connector, spec.action, call.path, **options)
    except WritError as error:
        raise _refusal(spec, error) from error
    return _result(spec, response)
