"""Function tools: JSON schema from type hints and docstrings, and validated calls.

How this works: `@function_tool` attaches a `FunctionTool` description to a function (or a method;
`Agent` binds it to the instance). The schema comes from the signature's type hints, with
descriptions from `Annotated[..., "text"]` or the Google-style `Args:` section of the docstring.
When the LLM calls a tool, `FunctionTool.call` parses and validates the JSON arguments against
that schema first; a bad call becomes an error *message* for the LLM, never an exception in the
session. The tool runs in the caller's task, so cancelling the reply cancels the tool.
"""

from __future__ import annotations

import enum
import inspect
import json
import logging
import re
import types
import typing
import weakref
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import attrs

__all__ = ["function_tool", "FunctionTool", "ToolResult", "ToolError", "get_tool"]

_TOOL_ATTR = "__trioagent_tool__"
_log = logging.getLogger("trioagent.tools")


class ToolError(Exception):
    """Raise from a tool to send a clear error message back to the LLM.

    Its message is what the LLM reads, so word it for the model ("no account with that
    number"). Any other exception a tool raises is logged with its traceback and the LLM gets
    only a generic message: exception text can carry secrets, paths or stack details.
    """


@attrs.frozen
class ToolResult:
    """The outcome of one tool call: `output` is what the LLM will read."""

    output: str
    is_error: bool = False
    value: Any = None


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    if not doc:
        return "", {}
    doc = inspect.cleandoc(doc)
    lines = doc.splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip() or re.match(r"^(Args|Arguments|Returns|Raises|Yields|Example|Examples|Note|Notes):\s*$", line.strip()):
            break
        summary_lines.append(line.strip())
    args: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        if re.match(r"^(Args|Arguments):\s*$", stripped):
            in_args = True
            continue
        if in_args:
            if re.match(r"^[A-Z][a-z]+:\s*$", stripped) or (line and not line[0].isspace() and stripped):
                in_args = False
                continue
            m = re.match(r"^\s+(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$", line)
            if m and (current is None or len(line) - len(line.lstrip()) <= _indent_of_args(lines)):
                current = m.group(1).lstrip("*")
                args[current] = m.group(3).strip()
            elif current and stripped:
                args[current] = (args[current] + " " + stripped).strip()
    return " ".join(summary_lines), args


def _indent_of_args(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        if re.match(r"^(Args|Arguments):\s*$", line.strip()):
            for nxt in lines[i + 1 :]:
                if nxt.strip():
                    return len(nxt) - len(nxt.lstrip())
    return 0


def _schema_for(tp: Any) -> dict[str, Any]:
    """JSON schema for one annotation."""
    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        schema = _schema_for(base)
        for m in meta:
            if isinstance(m, str):
                schema["description"] = m
        return schema
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is type(None):
        return {"type": "null"}
    if tp is Any:
        return {}
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        kind = "integer" if all(isinstance(v, int) for v in values) else "string"
        return {"type": kind, "enum": values}
    if origin is Literal:
        values = list(get_args(tp))
        kinds = {type(v) for v in values}
        literal: dict[str, Any] = {"enum": values}
        if kinds == {str}:
            literal["type"] = "string"
        elif kinds <= {int} and bool not in kinds:
            literal["type"] = "integer"
        return literal
    if origin in (Union, types.UnionType):
        members = get_args(tp)
        non_null = [m for m in members if m is not type(None)]
        if len(non_null) == 1:
            inner = _schema_for(non_null[0])
            return {"anyOf": [inner, {"type": "null"}]} if len(members) > 1 else inner
        return {"anyOf": [_schema_for(m) for m in members]}
    if origin in (list, typing.List, tuple, set, frozenset) or tp in (list, tuple, set):
        args = get_args(tp)
        schema = {"type": "array"}
        if args and origin is not tuple:
            schema["items"] = _schema_for(args[0])
        return schema
    if origin in (dict, typing.Dict) or tp is dict:
        args = get_args(tp)
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = _schema_for(args[1])
        return schema
    raise TypeError(f"function_tool cannot describe the type {tp!r} as JSON schema")


@attrs.define(eq=False)
class FunctionTool:
    """A callable the LLM may use, with its name, description and JSON schema.

    Call it with `await tool.call(arguments_json)`.
    """

    fn: Callable[..., Any]
    name: str
    description: str
    parameters: dict[str, Any]
    _instance: weakref.ref[Any] | None = None  # for a method: its object (weakly: an agent owns its tools)

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None) -> FunctionTool:
        summary, arg_docs = _parse_docstring(fn.__doc__)
        hints = typing.get_type_hints(fn, include_extras=True)
        sig = inspect.signature(fn)
        properties: dict[str, Any] = {}
        required: list[str] = []
        for pname, param in sig.parameters.items():
            if pname in ("self", "cls") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            tp = hints.get(pname, Any)
            prop = _schema_for(tp)
            if pname in arg_docs and "description" not in prop:
                prop["description"] = arg_docs[pname]
            if param.default is param.empty:
                required.append(pname)
            else:
                default = param.default
                if isinstance(default, enum.Enum):
                    default = default.value
                prop["default"] = default
            properties[pname] = prop
        parameters = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
        return cls(fn, name or fn.__name__, description if description is not None else summary, parameters)

    def bind(self, instance: Any) -> FunctionTool:
        """This tool bound to an instance (for methods decorated in a class body). The tool
        holds the instance weakly, so an agent and its tools are no reference cycle."""
        return FunctionTool(self.fn, self.name, self.description, self.parameters, weakref.ref(instance))

    def _callable(self) -> Callable[..., Any]:
        if self._instance is None:
            return self.fn
        instance = self._instance()
        if instance is None:
            raise ToolError(f"{self.name} belongs to an object that no longer exists")
        return self.fn.__get__(instance, type(instance))  # type: ignore[no-any-return]

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style tool description."""
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def validate(self, arguments: str | dict[str, Any] | None) -> dict[str, Any]:
        """Parse and check arguments from an LLM; returns Python values for the call.

        Raises:
            ToolError: the arguments are not valid JSON or do not match the schema.
        """
        args = parse_arguments(arguments)
        _check(args, self.parameters, "arguments")
        hints = typing.get_type_hints(self.fn, include_extras=True)
        converted: dict[str, Any] = {}
        for key, value in args.items():
            converted[key] = _convert(value, hints.get(key, Any))
        return converted

    async def call(self, arguments: str | dict[str, Any] | None) -> ToolResult:
        """Validate the arguments and run the tool in the current task.

        Bad arguments and a `ToolError` give an error result with their message for the LLM; any
        other exception is logged with its traceback and gives a generic error result (its text
        never reaches the LLM). `trio.Cancelled` still propagates, so interrupting the reply
        cancels the tool.
        """
        try:
            kwargs = self.validate(arguments)
        except ToolError as exc:
            return ToolResult(f"error: invalid arguments for {self.name}: {exc}", is_error=True)
        try:
            value = self._callable()(**kwargs)
            if inspect.isawaitable(value):
                value = await value
        except ToolError as exc:
            return ToolResult(f"error: {exc}", is_error=True)
        except Exception:  # a bug or an outage in the tool: the log gets the details, the LLM does not
            _log.exception("tool %s raised", self.name)
            return ToolResult(f"error: the {self.name} tool failed; it may work if tried again later", is_error=True)
        return ToolResult(_render(value), value=value)


def parse_arguments(arguments: str | dict[str, Any] | None) -> Any:
    """An LLM's tool arguments as JSON values (nothing or an empty string: no arguments).

    Raises:
        ToolError: not valid JSON.
    """
    if arguments is None or arguments == "":
        return {}
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise ToolError(f"arguments are not valid JSON: {exc.msg} at position {exc.pos}") from None


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "ok"
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _type_ok(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return True
    return isinstance(value, _JSON_TYPES[kind])


def _check(value: Any, schema: dict[str, Any], where: str) -> None:
    """Validate `value` against the subset of JSON schema `_schema_for` produces."""
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                _check(value, option, where)
                return
            except ToolError as exc:
                errors.append(str(exc))
        raise ToolError(f"{where}: does not match any allowed form ({'; '.join(errors)})")
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_type_ok(value, k) for k in kinds):
            raise ToolError(f"{where}: expected {' or '.join(kinds)}, got {type(value).__name__} {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise ToolError(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is not None:
            missing = [k for k in schema.get("required", []) if k not in value]
            if missing:
                raise ToolError(f"{where}: missing required {', '.join(missing)}")
            for key, item in value.items():
                if key in props:
                    _check(item, props[key], f"{key}")
                elif schema.get("additionalProperties") is False:
                    raise ToolError(f"{where}: unexpected argument {key!r}")
        extra = schema.get("additionalProperties")
        if props is None and isinstance(extra, dict):
            for key, item in value.items():
                _check(item, extra, f"{where}[{key!r}]")


def _convert(value: Any, tp: Any) -> Any:
    """Turn validated JSON values into the annotated Python types (enums, floats, tuples)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _convert(value, get_args(tp)[0])
    if value is None:
        return None
    if inspect.isclass(tp) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    if tp is int and isinstance(value, float):
        return int(value)
    if origin in (Union, types.UnionType):
        non_null = [m for m in get_args(tp) if m is not type(None)]
        if len(non_null) == 1:
            return _convert(value, non_null[0])
        return value
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        args = get_args(tp)
        items = [_convert(v, args[0]) for v in value] if args and origin is not tuple else value
        return origin(items) if origin is not list else items
    return value


def function_tool(
    fn: Callable[..., Any] | None = None, *, name: str | None = None, description: str | None = None
) -> Any:
    """Mark a function or method as a tool the LLM may call.

    Usable bare (``@function_tool``) or with options (``@function_tool(name="lookup")``). The
    function is returned unchanged, with its `FunctionTool` attached; `Agent` collects decorated
    methods automatically. Works for sync and async functions.
    """

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        setattr(f, _TOOL_ATTR, FunctionTool.from_function(f, name=name, description=description))
        return f

    return wrap(fn) if fn is not None else wrap


def get_tool(obj: Any) -> FunctionTool | None:
    """The `FunctionTool` of a decorated function, a plain function, or None."""
    if isinstance(obj, FunctionTool):
        return obj
    return getattr(obj, _TOOL_ATTR, None)
