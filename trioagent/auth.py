"""Session tokens: HMAC-SHA256 signed, expiring, checked before any session starts.

A token is ``base64url(json payload) "." base64url(signature)``; the payload holds ``exp`` (Unix
seconds) and an optional ``sub``. Expiry is wall-clock time by nature (tokens cross machines), so
the clock is injectable and is the only wall-clock reading in the library.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import json
from collections.abc import Callable

from .errors import TrioAgentError

__all__ = ["mint_token", "verify_token", "TokenError"]


class TokenError(TrioAgentError):
    """A token that is malformed, forged or expired."""


def _wall() -> float:
    return _dt.datetime.now(_dt.timezone.utc).timestamp()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(secret: str | bytes, ttl: float = 3600.0, subject: str = "", now: Callable[[], float] = _wall) -> str:
    """A token valid for `ttl` seconds."""
    key = secret.encode() if isinstance(secret, str) else secret
    payload = _b64(json.dumps({"exp": int(now() + ttl), "sub": subject}, separators=(",", ":")).encode())
    sig = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    return f"{payload}.{sig}"


def verify_token(token: str, secret: str | bytes, now: Callable[[], float] = _wall) -> dict[str, object]:
    """Return the token's payload.

    Raises:
        TokenError: malformed, bad signature, or expired.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    payload, sep, sig = token.partition(".")
    if not sep or not payload or not sig or not token.isascii():
        raise TokenError("malformed token")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, sig):
        raise TokenError("bad token signature")
    try:
        claims = json.loads(_unb64(payload))
        exp = float(claims["exp"])
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed token payload") from None
    if now() >= exp:
        raise TokenError("token expired")
    return dict(claims)
