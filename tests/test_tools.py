from __future__ import annotations

import enum
import json
from typing import Annotated, Literal, Optional

import pytest
import trio

from trioagent import Agent, ChatContext, ChatRole, FunctionTool, ToolError, function_tool
from trioagent.chat import FunctionCall, FunctionCallOutput


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


@function_tool
async def get_weather(
    city: str,
    unit: Unit = Unit.C,
    days: Annotated[int, "How many days ahead"] = 1,
    detail: Literal["short", "long"] = "short",
    tags: list[str] | None = None,
    extra: Optional[dict[str, float]] = None,
    exact: bool = False,
    scale: float = 1.0,
) -> dict[str, object]:
    """Look up the weather for a city.

    Longer description that is not the summary.

    Args:
        city: The city name,
            for example Paris.
        unit: Temperature unit.
    """
    return {"city": city, "unit": unit.value, "days": days, "detail": detail, "tags": tags, "extra": extra, "scale": scale}


def test_schema_from_hints_and_docstring() -> None:
    tool = get_weather.__trioagent_tool__
    assert tool.name == "get_weather"
    assert tool.description == "Look up the weather for a city."
    params = tool.parameters
    assert params["required"] == ["city"]
    assert params["additionalProperties"] is False
    props = params["properties"]
    assert props["city"] == {"type": "string", "description": "The city name, for example Paris."}
    assert props["unit"] == {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit.", "default": "celsius"}
    assert props["days"] == {"type": "integer", "description": "How many days ahead", "default": 1}
    assert props["detail"] == {"enum": ["short", "long"], "type": "string", "default": "short"}
    assert props["tags"] == {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}], "default": None}
    assert props["extra"]["anyOf"][0] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["exact"] == {"type": "boolean", "default": False}
    assert tool.schema()["function"]["name"] == "get_weather"


async def test_valid_call_converts_types() -> None:
    tool = get_weather.__trioagent_tool__
    result = await tool.call(json.dumps({"city": "Paris", "unit": "fahrenheit", "days": 3, "tags": ["a"], "scale": 2}))
    assert not result.is_error
    assert result.value == {"city": "Paris", "unit": "fahrenheit", "days": 3, "detail": "short", "tags": ["a"], "extra": None, "scale": 2.0}
    assert json.loads(result.output)["unit"] == "fahrenheit"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("{not json", "not valid JSON"),
        ("{}", "missing required city"),
        ('{"city": 5}', "expected string"),
        ('{"city": "x", "unit": "kelvin"}', "not one of"),
        ('{"city": "x", "days": "3"}', "expected integer"),
        ('{"city": "x", "days": true}', "expected integer"),
        ('{"city": "x", "bogus": 1}', "unexpected argument 'bogus'"),
        ('{"city": "x", "tags": [1]}', "does not match"),
        ('[1, 2]', "expected object"),
    ],
)
async def test_bad_calls_become_error_messages(arguments: str, message: str) -> None:
    result = await get_weather.__trioagent_tool__.call(arguments)
    assert result.is_error and message in result.output and result.output.startswith("error: invalid arguments for get_weather")


async def test_sync_tool_and_raising_tool(caplog: pytest.LogCaptureFixture) -> None:
    def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    def broken() -> None:
        """Always fails."""
        raise RuntimeError("disk on fire at /srv/secrets, token sk-123")

    def refuses() -> None:
        """Refuses politely."""
        raise ToolError("no such account")

    assert (await FunctionTool.from_function(add).call('{"a": 1}')).output == "3"
    failed = await FunctionTool.from_function(broken).call("")
    # Only a ToolError's text reaches the LLM; any other exception's stays in the log.
    assert failed.is_error and failed.output == "error: the broken tool failed; it may work if tried again later"
    assert "disk on fire" in caplog.text and "Traceback" in caplog.text
    assert (await FunctionTool.from_function(refuses).call(None)).output == "error: no such account"


async def test_tool_is_cancelled_with_its_scope(autojump_clock: trio.testing.MockClock) -> None:
    finished = []

    async def slow() -> str:
        """Takes long."""
        await trio.sleep(10)
        finished.append(True)
        return "done"

    with trio.move_on_after(1):
        await FunctionTool.from_function(slow).call("{}")
    assert not finished and trio.current_time() == 1


def test_agent_collects_decorated_methods_and_extra_tools() -> None:
    def lookup(term: str) -> str:
        """Look a term up."""
        return term

    class Helper(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="Help.", tools=[lookup])

        @function_tool
        async def book(self, when: str) -> str:
            """Book a table."""
            return f"booked {when} for {type(self).__name__}"

    agent = Helper()
    assert sorted(t.name for t in agent.tools) == ["book", "lookup"]
    assert "self" not in agent.tool("book").parameters["properties"]  # type: ignore[union-attr]
    assert agent.chat_context.messages[0].role is ChatRole.SYSTEM and agent.chat_context.messages[0].content == "Help."
    with pytest.raises(TypeError, match="cannot describe"):
        FunctionTool.from_function(lambda x: x).__class__.from_function(_bad_hint)


def _bad_hint(x: complex) -> None:
    """Bad."""


async def test_bound_method_tool_runs_on_the_instance() -> None:
    class Helper(Agent):
        @function_tool
        def whoami(self) -> str:
            """Name."""
            return self.instructions

    helper = Helper(instructions="me")
    result = await helper.tool("whoami").call("{}")  # type: ignore[union-attr]
    assert result.output == "me"


def test_chat_context_copy_and_truncate() -> None:
    ctx = ChatContext()
    ctx.add_message(role=ChatRole.SYSTEM, content="sys")
    for i in range(5):
        ctx.add_message(role="user", content=f"u{i}")
    ctx.add_function_call(name="f", arguments="{}", call_id="c1")
    ctx.add_function_output(name="f", call_id="c1", output="ok")
    copy = ctx.copy()
    copy.messages[1].content = "changed"
    copy.add_message(role=ChatRole.ASSISTANT, content="extra")
    assert ctx.messages[1].content == "u0" and len(ctx) == 8 and len(copy) == 9
    ctx.truncate(3)
    assert [getattr(i, "content", type(i).__name__) for i in ctx.items] == ["sys", "u4", "FunctionCall", "FunctionCallOutput"]
    ctx.truncate(1)  # an output never stays without its call
    assert [type(i).__name__ for i in ctx.items] == ["ChatMessage"]
    openai = copy.to_openai()
    assert openai[0] == {"role": "system", "content": "sys"}
    assert any(m.get("tool_calls") for m in openai) and any(m["role"] == "tool" for m in openai)
    assert isinstance(copy.items[6], FunctionCall) and isinstance(copy.items[7], FunctionCallOutput)
