"""`Agent`: instructions, tools, chat context and the hooks a session calls."""

from __future__ import annotations

import os

import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .audio.player import BackgroundAudioHandlerConfig
from .chat import ChatContext, ChatRole
from .mcp import MCPManager, MCPServer
from .scheduler import UtteranceHandle
from .states import AgentState, UserState
from .tools import FunctionTool, get_tool

__all__ = ["Agent", "AgentSessionAPI"]


class AgentSessionAPI(Protocol):
    """What an agent can do with the session running it (`AgentSession` is the one there is;
    see it for each member). The agent layer sits below the session, so it names the session
    by what it offers rather than importing it."""

    @property
    def agent_state(self) -> AgentState: ...

    answer_turns: bool

    @property
    def user_state(self) -> UserState: ...

    async def say(self, message: str, interruptible: bool = True, add_to_chat_context: bool = True) -> UtteranceHandle: ...

    async def reply(self, instructions: str, wait_for_playback: bool = True, interruptible: bool = True) -> UtteranceHandle: ...

    def interrupt(self, *, force: bool = False) -> None: ...

    def dtmf_received(self, digit: str) -> None: ...

    async def send_text(self, text: str) -> UtteranceHandle | None: ...

    def send_dtmf(self, digits: str) -> None: ...

    def get_context_history(self, include_function_calls: bool = False, include_system_messages: bool = False) -> list[dict[str, Any]]: ...

    async def play_background_audio(self, config: BackgroundAudioHandlerConfig, override_thinking: bool = False) -> None: ...

    async def stop_background_audio(self) -> None: ...

    async def start_thinking_audio(self) -> None: ...

    async def stop_thinking_audio(self) -> None: ...

    async def hangup(self, reason: str = "hangup") -> None: ...

    async def leave(self) -> None: ...

    async def close(self) -> None: ...

    def on(self, name: str, callback: Callable[[Any], Any] | None = None) -> Any: ...

    def off(self, name: str, callback: Callable[[Any], Any]) -> None: ...


class Agent:
    """What the agent is: its instructions, its tools and its hooks.

    Subclass it and override the hooks you need. Methods decorated with `@function_tool` are
    collected as tools automatically; more can be passed as `tools=[...]`.

    Args:
        instructions: the system prompt; seeds `chat_context`.
        tools: extra tools (decorated or plain functions, or `FunctionTool`s).
        chat_context: start from this context instead of a fresh one.
        mcp_servers: MCP servers (`MCPServerStdio`, `MCPServerHTTP`) whose tools the agent
            uses. They are connected when the agent takes over a session (before `on_enter`) and
            disconnected when it hands over or the session closes; see `trioagent.mcp`.
        apology: said when an answer fails (its LLM or TTS errs or times out), e.g. "Sorry, I
            lost my train of thought."; None (the default): nothing is said.
    """

    def __init__(
        self,
        instructions: str = "",
        tools: Sequence[Callable[..., Any] | FunctionTool] | None = None,
        chat_context: ChatContext | None = None,
        mcp_servers: Sequence[MCPServer] | None = None,
        apology: str | None = None,
    ) -> None:
        self.instructions = instructions
        self.chat_context = chat_context if chat_context is not None else ChatContext()
        if instructions and not any(m.role is ChatRole.SYSTEM for m in self.chat_context.messages):
            self.chat_context.items.insert(0, ChatContext().add_message(role=ChatRole.SYSTEM, content=instructions))
        self._session: weakref.ref[AgentSessionAPI] | None = None  # (weak: the session owns the agent)
        self._thinking_background_config: BackgroundAudioHandlerConfig | None = None
        self._tools: list[FunctionTool] = self._collect_tools(tools or ())
        self.apology = apology
        self.mcp_manager: MCPManager | None = MCPManager(mcp_servers) if mcp_servers else None
        """The agent's MCP servers and their tools (None without servers)."""

    def _collect_tools(self, extra: Sequence[Callable[..., Any] | FunctionTool]) -> list[FunctionTool]:
        found: list[FunctionTool] = []
        seen: set[str] = set()
        for cls in type(self).__mro__:
            for attr, value in vars(cls).items():
                tool = get_tool(value)
                if tool is not None and attr not in seen:
                    seen.add(attr)
                    found.append(tool.bind(self))
        for item in extra:
            tool = get_tool(item)
            found.append(tool if tool is not None else FunctionTool.from_function(item))  # type: ignore[arg-type]
        names = [t.name for t in found]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"two tools share the name(s) {sorted(dupes)}")
        return found

    @property
    def tools(self) -> list[FunctionTool]:
        """The agent's own tools, then those of its connected MCP servers."""
        if self.mcp_manager is None:
            return list(self._tools)
        return [*self._tools, *self.mcp_manager.tools]

    @property
    def own_tools(self) -> list[FunctionTool]:
        """The agent's own tools (not its MCP servers')."""
        return list(self._tools)

    def tool(self, name: str) -> FunctionTool | None:
        return next((t for t in self.tools if t.name == name), None)

    @property
    def session(self) -> AgentSessionAPI:
        """The session running this agent.

        Raises:
            RuntimeError: the agent is not attached to a session yet.
        """
        session = self._session() if self._session is not None else None
        if session is None:
            raise RuntimeError("this agent is not running in an AgentSession")
        return session

    @session.setter
    def session(self, value: AgentSessionAPI | None) -> None:
        self._session = weakref.ref(value) if value is not None else None

    def set_thinking_audio(self, file: str | os.PathLike[str] | BackgroundAudioHandlerConfig, volume: float = 0.3) -> None:
        """Audio to play while the agent thinks (between the user's turn and the first word):
        a file (looped, at `volume`, as the seed does) or a whole config."""
        if not isinstance(file, BackgroundAudioHandlerConfig):
            file = BackgroundAudioHandlerConfig(file, volume=volume, looping=True)
        self._thinking_background_config = file

    @property
    def thinking_audio(self) -> BackgroundAudioHandlerConfig | None:
        return self._thinking_background_config

    async def initialize_mcp(self) -> None:
        """Called when the agent takes over a session, once its MCP servers are connected (their
        tools are in `tools`), before `on_enter`. Nothing by default."""

    # -- hooks --------------------------------------------------------------------------------
    async def on_enter(self) -> None:
        """Called when the agent takes over the session."""

    async def on_exit(self) -> None:
        """Called when the agent hands over or the session closes."""

    async def on_dtmf(self, digit: str) -> None:
        """Called with each keypad digit the caller presses (``0``-``9``, ``*``, ``#``,
        ``A``-``D``), in the session's nursery: it may speak or hand over. Nothing by default."""

    def on_speech_in(self, data: dict[str, Any]) -> None:
        """The input tap, as in the seed: called with ``{"frame": AudioFrame}`` for every frame
        the session hears. Only an agent that overrides it is called (it runs in the input
        loop: keep it short)."""

    def on_speech_out(self, data: dict[str, Any]) -> None:
        """The output tap, as in the seed: called with ``{"frame": AudioFrame}`` for every
        frame the user is sent (the agent's voice over any background audio). Only an agent
        that overrides it is called (it runs at each mixer tick: keep it short)."""

    async def cleanup(self) -> None:
        """Release the agent's resources; called last when the session closes."""
