"""trioagent: real-time voice AI agents on trio's structured concurrency."""

from .agent import Agent as Agent
from .audio import AudioFrame as AudioFrame
from .audio import BackgroundAudioHandlerConfig as BackgroundAudioHandlerConfig
from .chat import ChatContext as ChatContext
from .chat import ChatMessage as ChatMessage
from .chat import ChatRole as ChatRole
from .chat import FunctionCall as FunctionCall
from .chat import FunctionCallOutput as FunctionCallOutput
from .errors import AudioFormatError as AudioFormatError
from .errors import ProtocolError as ProtocolError
from .errors import ProviderError as ProviderError
from .errors import ProviderTimeout as ProviderTimeout
from .errors import SessionClosed as SessionClosed
from .errors import TransportClosed as TransportClosed
from .errors import TransportError as TransportError
from .errors import TrioAgentError as TrioAgentError
from .flow import ConversationFlow as ConversationFlow
from .mcp import MCPServerError as MCPServerError
from .mcp import MCPServerHTTP as MCPServerHTTP
from .mcp import MCPServerStdio as MCPServerStdio
from .metrics import TurnMetrics as TurnMetrics
from .pipeline import CascadingPipeline as CascadingPipeline
from .pipeline import Pipeline as Pipeline
from .pipeline import RealTimePipeline as RealTimePipeline
from .providers import EnergyVAD as EnergyVAD
from .providers import SilenceTurnDetector as SilenceTurnDetector
from .server import serve as serve
from .session import AgentSession as AgentSession
from .states import AgentState as AgentState
from .states import UserState as UserState
from .tools import FunctionTool as FunctionTool
from .tools import ToolError as ToolError
from .tools import function_tool as function_tool
from .utterance import UtteranceHandle as UtteranceHandle

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentSession",
    "AgentState",
    "AudioFormatError",
    "AudioFrame",
    "BackgroundAudioHandlerConfig",
    "CascadingPipeline",
    "ChatContext",
    "ChatMessage",
    "ChatRole",
    "ConversationFlow",
    "EnergyVAD",
    "FunctionCall",
    "FunctionCallOutput",
    "FunctionTool",
    "MCPServerError",
    "MCPServerHTTP",
    "MCPServerStdio",
    "Pipeline",
    "ProtocolError",
    "ProviderError",
    "ProviderTimeout",
    "RealTimePipeline",
    "SessionClosed",
    "SilenceTurnDetector",
    "ToolError",
    "TransportClosed",
    "TransportError",
    "TrioAgentError",
    "TurnMetrics",
    "UserState",
    "UtteranceHandle",
    "function_tool",
    "serve",
]
