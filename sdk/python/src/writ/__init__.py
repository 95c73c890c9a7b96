"""Writ SDK: task-scoped credentials for AI agents.

- ``Orchestrator`` / ``AsyncOrchestrator``: declare tasks (``private_key_jwt`` client credentials) and always end
  them (``run_task``, ``task``).
- ``Agent`` / ``AsyncAgent``: token exchange (RFC 8693 + RFC 9396) for one operation on one connector,
  DPoP-bound by default (ES256), cached, approval-aware; ``fetch`` through the connector gateway.
- ``writ.tools.langchain`` and ``writ.tools.openai_agents``: framework tools wrapping a connector operation.
"""

from ._core import MAX_ANSWER_BYTES, CreatedTask, Credential, PendingApproval, gateway_url_for
from .aio import AsyncAgent, AsyncOrchestrator, AsyncTaskAgent
from .client import Agent, Orchestrator, TaskAgent
from .errors import (
    AccessDeniedError,
    ApprovalTimeoutError,
    GatewayPathError,
    InvalidClientError,
    InvalidGrantError,
    PolicyRefusalError,
    ToolRefusalError,
    WritError,
    WritOAuthError,
    WritResponseError,
    WritTimeoutError,
)
from .operation import OperationCall, OperationSpec, arun_operation, run_operation

__all__ = [
    "MAX_ANSWER_BYTES", "AccessDeniedError", "Agent", "ApprovalTimeoutError", "AsyncAgent", "AsyncOrchestrator", "AsyncTaskAgent",
    "CreatedTask", "Credential", "GatewayPathError", "InvalidClientError", "InvalidGrantError", "OperationCall",
    "OperationSpec", "Orchestrator", "PendingApproval", "PolicyRefusalError", "TaskAgent", "ToolRefusalError",
    "WritError", "WritOAuthError", "WritResponseError", "WritTimeoutError", "arun_operation", "gateway_url_for", "run_operation",
]
