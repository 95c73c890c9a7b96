"""An OpenAI Agents SDK function tool for one connector operation (``pip install 'writ[openai-agents]'``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Mapping

from agents import FunctionTool
from agents.strict_schema import ensure_strict_json_schema
from pydantic import BaseModel, ValidationError

from ..aio import AsyncTaskAgent
from ..errors import ToolRefusalError
from ..operation import OperationCall, OperationSpec, arun_operation, run_operation


def writ_function_tool(agent: Any, *, name: str, description: str, args_schema: type[BaseModel], connector: str,
                       action: str, request: Callable[[BaseModel], OperationCall],
                       constraints: Callable[[BaseModel], Mapping[str, Any]] | None = None) -> FunctionTool:
    """A ``FunctionTool``: the model's JSON arguments (``args_schema``) decide the grant and the call; the result is
    ``{status, body}`` as JSON, a refusal is returned as an ``error:`` text the model can read (the SDK's default
    error handler would hide it). ``agent`` is a ``TaskAgent`` or an ``AsyncTaskAgent``."""
    spec = OperationSpec(connector=connector, action=action, request=request, constraints=constraints)

    async def invoke(_context: Any, arguments: str) -> str:
        try:
            args = args_schema.model_validate_json(arguments or "{}")
        except ValidationError as invalid:
            return f"error: invalid arguments: {invalid}"
        try:
            if isinstance(agent, AsyncTaskAgent):
                result = await arun_operation(agent, spec, args)
            else:
                result = await asyncio.to_thread(run_operation, agent, spec, args)
        except ToolRefusalError as refusal:
            return f"error: {refusal}"
        return json.dumps(result)

    return FunctionTool(
        name=name,
        description=description,
        params_json_schema=ensure_strict_json_schema(args_schema.model_json_schema()),
        on_invoke_tool=invoke,
        strict_json_schema=True,
    )
