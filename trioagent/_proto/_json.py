"""What the JSON wire formats share: one text message -> one JSON object, or ProtocolError."""

from __future__ import annotations

import json
from typing import Any

from ..errors import CloseCode, ProtocolError


def json_object(text: str | bytes, binary_error: str) -> dict[str, Any]:
    """Parse a text message holding a JSON object.

    Raises:
        ProtocolError: a binary message (with `binary_error` as the reason), not JSON, or JSON
            that is not an object.
    """
    if isinstance(text, bytes):
        raise ProtocolError(binary_error, close_code=CloseCode.UNSUPPORTED_DATA)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc.msg}") from None
    except RecursionError:
        raise ProtocolError("JSON nested too deep") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise ProtocolError(f"not usable JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a message must be a JSON object")
    return obj
