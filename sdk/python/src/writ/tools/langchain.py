"""A LangChain tool for one connector operation (``pip install 'writ[langchain]'``)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from langchain_core.tools import StructuredTool, ToolException
from pydantic import BaseModel

from ..aio import AsyncTaskAgent
from ..errors import ToolRefusalError
from ..operation import OperationCall, OperationSpec, arun_operation, run_operation


def writ_tool(agent: Any, *, name: str, description: str, args_schema: type[BaseModel], connector: str, action: str,
              request: Callable[[BaseModel], OperationCall],
              constraints: Callable[[BaseModel], Mapping[str, Any]] | None = None) -> StructuredTool:
    """A ``StructuredTool``: the model supplies ``args_schema``'s arguments; the tool asks Writ for exactly this
    operation with the constraints they imply, calls it through the gateway and returns ``{status, body}``.
    A refusal (the policy's reasons, the gateway's rule) becomes the tool's error text for the model
    (``handle_tool_error``). ``agent`` is a ``TaskAgent`` or an ``AsyncTaskAgent``."""
    spec = OperationSpec(connector=connector, action=action, request=request, constraints=constraints)

    def run(**kwargs: Any) -> dict[str, Any]:
        try:
            return run_operation(agent, spec, args_schema(**kwargs))
        except ToolRefusalError as refusal:
            raise ToolException(str(refusal)) from refusal

    async def arun(**kwargs: Any) -> dict[str, Any]:
        try:
            return await arun_operation(agent, spec, args_schema(**kwargs))
        except ToolRefusalError as refusal:
            raise ToolException(str(refusal)) from refusal

    is_async = isinstance(agent, AsyncTaskAgent)
    return StructuredTool.from_function(
        func=None if is_async else run,
        coroutine=arun if is_async else None,
        name=name,
        description=description,
        args_schema=args_schema,
        handle_tool_error=True,
    )
