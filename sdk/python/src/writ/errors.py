"""Typed errors: each carries a stable ``code``; OAuth errors carry the RFC error code and the policy's reasons."""

from __future__ import annotations

import re
from typing import Any

import httpx

_POLICY_PREFIX = re.compile(r"^(denied by policy|a human must approve this request):\s*")


def reasons_of(description: str | None) -> list[str]:
    """The policy's reasons carried in an ``error_description`` ("denied by policy: a; b")."""
    if not description:
        return []
    match = _POLICY_PREFIX.match(description)
    if not match:
        return [description]
    parts = [part.strip() for part in description[match.end():].split("; ")]
    return [part for part in parts if part and part != "no reason given"]


class WritError(Exception):
    """Base class of every error this SDK raises."""

    code = "writ_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


def fields_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The offending fields of a refused body (the Tasks API's ``fields: [{field, message}]``, or one ``field``)."""
    fields = body.get("fields")
    if isinstance(fields, list):
        return [entry for entry in fields if isinstance(entry, dict) and isinstance(entry.get("field"), str)]
    return [{"field": body["field"]}] if isinstance(body.get("field"), str) else []


def _field_text(entry: dict[str, Any]) -> str:
    text = entry.get("message")
    if not isinstance(text, str) or not text:
        return entry["field"]
    return text if text.startswith(entry["field"]) else f"{entry['field']}: {text}"


class WritOAuthError(WritError):
    """An OAuth error answered by Writ: ``error`` is the RFC code, ``reasons`` the policy's reasons, ``fields`` the
    offending fields of a refused body (``[{"field", "message"}]``), also named in the message."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.error: str = str(body.get("error"))
        self.description: str | None = body.get("error_description")
        self.status = status
        self.body = body
        self.reasons = reasons_of(self.description)
        self.fields = fields_of(body)
        message = f"{self.error}: {self.description}" if self.description else self.error
        if self.fields:
            message += " (" + "; ".join(_field_text(entry) for entry in self.fields) + ")"
        super().__init__(message, self.error)


class PolicyRefusalError(WritOAuthError):
    """``invalid_authorization_details``: the policy (or the task's declared purpose) refused."""


class AccessDeniedError(WritOAuthError):
    """``access_denied``: an approval was denied, expired or already used."""


class InvalidGrantError(WritOAuthError):
    """``invalid_grant``: the task token is not valid for this agent, or the task is over."""


class InvalidClientError(WritOAuthError):
    """``invalid_client``: the client assertion was refused."""


_BY_CODE = {
    "invalid_authorization_details": PolicyRefusalError,
    "access_denied": AccessDeniedError,
    "invalid_grant": InvalidGrantError,
    "invalid_client": InvalidClientError,
}


def oauth_error(status: int, body: dict[str, Any]) -> WritOAuthError:
    """The typed error for an OAuth error body."""
    return _BY_CODE.get(str(body.get("error")), WritOAuthError)(status, body)


class ApprovalTimeoutError(WritError):
    """No human decision before the agent's approval timeout; the request stays pending."""

    code = "approval_timeout"

    def __init__(self, approval_id: str, reasons: list[str]) -> None:
        super().__init__(f"no decision on approval {approval_id} before the timeout")
        self.approval_id = approval_id
        self.reasons = reasons


class GatewayPathError(WritError):
    """A gateway call refused before anything was sent: the target would leave the connector."""

    code = "invalid_gateway_path"


class WritTimeoutError(WritError, httpx.TimeoutException):
    """A request to the authorization server or a gateway call without an answer in time (``timeout`` seconds to
    connect, or between two reads of the answer, as httpx counts it). The request may have reached the upstream: a non-idempotent call is not sent again. Also an
    ``httpx.TimeoutException``, which the SDK raised before."""

    code = "timeout"

    def __init__(self, message: str, timeout: float | None) -> None:
        super().__init__(message)
        self.timeout = timeout


class WritResponseError(WritError):
    """A non-OAuth answer where an OAuth one was expected (a proxy page, a 5xx)."""

    code = "unexpected_response"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ToolRefusalError(WritError):
    """A refusal a model can read: the policy's reasons, the gateway's rule or the upstream's status."""

    code = "tool_refused"

    def __init__(self, message: str, status: int | None = None, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reasons = reasons or []
