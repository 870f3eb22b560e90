"""OpenTelemetry spans through `opentelemetry-api`: one span per session and one per utterance
(each turn's answer, each say), with the seed's attributes (agent, pipeline components, tools,
interrupted, latencies). The SDK and its exporter are the application's choice; without
`opentelemetry-api` installed (or without an SDK configured) every call here does nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Span", "end", "start"]

Span = Any
_AttributeValue = str | bool | int | float | list[str]


def _tracer() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace.get_tracer("trioagent")


def start(name: str, attributes: Mapping[str, _AttributeValue | None], parent: Span | None = None) -> Span | None:
    """A started span (a child of `parent`), or None without OpenTelemetry."""
    tracer = _tracer()
    if tracer is None:
        return None
    from opentelemetry import trace

    context = trace.set_span_in_context(parent) if parent is not None else None
    return tracer.start_span(name, context=context, attributes={k: v for k, v in attributes.items() if v is not None})


def end(span: Span | None, attributes: Mapping[str, _AttributeValue | None] | None = None, error: BaseException | None = None) -> None:
    """Add `attributes` and end `span` (an `error` marks it failed). None: nothing."""
    if span is None:
        return
    for key, value in (attributes or {}).items():
        if value is not None:
            span.set_attribute(key, value)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
    span.end()
