"""Factories that are wrong in the ways users get them wrong (for tests/test_cli.py)."""

from __future__ import annotations


def wrong_shape() -> str:
    return "not an agent"


def broken() -> None:
    raise RuntimeError("no API key in the environment")
