"""Running an LLM step's tool calls, the same way for every pipeline."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import trio

from ..agent import Agent
from ..chat import ChatItem, ChatMessage, FunctionCall, FunctionCallOutput
from ..events import ConversationItemAdded, FunctionToolsExecuted
from ..providers.base import ToolCall
from ..utterance import Utterance

if TYPE_CHECKING:
    from .base import PipelineHost

__all__ = ["run_tool_calls"]


async def run_tool_calls(
    host: PipelineHost, utterance: Utterance, calls: list[ToolCall], step: int, inline_messages: list[ChatMessage]
) -> tuple[Agent | None, list[FunctionCallOutput]]:
    """Run one step's tool calls in order, in the current task (the utterance's scope: a
    barge-in cancels them); put each call and its output in the chat context, then what the
    tools said (`inline_messages`, emptied); emit the events. Returns an agent to hand over to
    (if a tool returned one) and the outputs, in the order of the calls."""
    context = host.agent.chat_context
    call_items: list[FunctionCall] = []
    for i, call in enumerate(calls):
        arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
        call_items.append(context.add_function_call(name=call.name, arguments=arguments, call_id=call.call_id or f"{utterance.handle.id}_{step}_{i}"))
    started = trio.current_time()
    outputs: list[FunctionCallOutput] = []
    handoff = None
    for item in call_items:
        tool = host.agent.tool(item.name)
        if tool is None:
            output, is_error, value = f"error: there is no tool named {item.name!r}", True, None
        else:
            result = await tool.call(item.arguments)
            output, is_error, value = result.output, result.is_error, result.value
        if isinstance(value, Agent):
            handoff = value
            output = f"transferred to {type(value).__name__}"
        outputs.append(context.add_function_output(name=item.name, call_id=item.call_id, output=output, is_error=is_error))
    # What a tool said while it ran comes after the outputs (a valid history), in order.
    context.items.extend(inline_messages)
    inline_messages.clear()
    utterance.note(
        tool_calls=utterance.metrics.tool_calls + len(calls),
        tool_seconds=utterance.metrics.tool_seconds + trio.current_time() - started,
    )
    committed: list[ChatItem] = [*call_items, *outputs]
    for chat_item in committed:
        host.emit("conversation_item_added", ConversationItemAdded(chat_item))
    host.emit("function_tools_executed", FunctionToolsExecuted(tuple(call_items), tuple(outputs)))
    return handoff, outputs
