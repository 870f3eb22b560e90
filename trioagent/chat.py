"""The conversation as the LLM sees it: `ChatContext` and its items."""

from __future__ import annotations

import enum
import itertools
from typing import Any, Union

import attrs

__all__ = ["ChatRole", "ChatMessage", "FunctionCall", "FunctionCallOutput", "ChatItem", "ChatContext"]

_ids = itertools.count(1)


def _next_id() -> str:
    return f"item_{next(_ids)}"


class ChatRole(str, enum.Enum):
    SYSTEM = "system"
    DEVELOPER = "developer"  # (OpenAI's name for instructions from the application, as the seed has it)
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@attrs.define(eq=False)
class ChatMessage:
    """One message. `interrupted` marks an assistant message cut short by the user; its
    `content` then holds only what was actually played."""

    role: ChatRole
    content: str
    id: str = attrs.field(factory=_next_id)
    interrupted: bool = False


@attrs.frozen
class FunctionCall:
    """The LLM asked to call a tool. `arguments` is the JSON text the LLM wrote."""

    name: str
    arguments: str
    call_id: str
    id: str = attrs.field(factory=_next_id)


@attrs.frozen
class FunctionCallOutput:
    """What a tool returned (or the error it raised), sent back to the LLM."""

    name: str
    call_id: str
    output: str
    is_error: bool = False
    id: str = attrs.field(factory=_next_id)


ChatItem = Union[ChatMessage, FunctionCall, FunctionCallOutput]


@attrs.define(eq=False)
class ChatContext:
    """An ordered list of chat items."""

    items: list[ChatItem] = attrs.field(factory=list)

    @classmethod
    def empty(cls) -> ChatContext:
        return cls()

    def add_message(self, *, role: ChatRole | str, content: str) -> ChatMessage:
        """Append a message and return it."""
        msg = ChatMessage(ChatRole(role), content)
        self.items.append(msg)
        return msg

    def add_function_call(self, *, name: str, arguments: str, call_id: str) -> FunctionCall:
        call = FunctionCall(name, arguments, call_id)
        self.items.append(call)
        return call

    def add_function_output(self, *, name: str, call_id: str, output: str, is_error: bool = False) -> FunctionCallOutput:
        out = FunctionCallOutput(name, call_id, output, is_error)
        self.items.append(out)
        return out

    @property
    def messages(self) -> list[ChatMessage]:
        return [i for i in self.items if isinstance(i, ChatMessage)]

    def copy(self) -> ChatContext:
        """A copy whose item list can change independently (messages are copied too)."""
        return ChatContext([attrs.evolve(i) if isinstance(i, ChatMessage) else i for i in self.items])

    def truncate(self, max_items: int) -> ChatContext:
        """Keep the leading system messages and the last `max_items` other items, in place.

        A function output is never kept without its call. Returns self.
        """
        if max_items < 0:
            raise ValueError(f"max_items must be >= 0, got {max_items}")
        head: list[ChatItem] = []
        for item in self.items:
            if isinstance(item, ChatMessage) and item.role is ChatRole.SYSTEM:
                head.append(item)
            else:
                break
        rest = self.items[len(head) :]
        tail = rest[len(rest) - max_items :] if max_items else []
        while tail and isinstance(tail[0], FunctionCallOutput):
            tail = tail[1:]
        self.items = head + tail
        return self

    def to_openai(self) -> list[dict[str, Any]]:
        """The items as OpenAI chat-completions messages.

        Tool calls join the assistant message just before them (the text an LLM step wrote
        before calling them), or one of their own; calls made together share one message, and
        their outputs follow as ``tool`` messages.
        """
        out: list[dict[str, Any]] = []
        for item in self.items:
            if isinstance(item, ChatMessage):
                out.append({"role": item.role.value, "content": item.content})
            elif isinstance(item, FunctionCall):
                call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
                last = out[-1] if out else None
                if last is not None and last["role"] == "assistant":
                    last.setdefault("tool_calls", []).append(call)
                else:
                    out.append({"role": "assistant", "content": None, "tool_calls": [call]})
            else:
                out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        return out

    def __len__(self) -> int:
        return len(self.items)
