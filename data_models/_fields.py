"""Tolerant readers for stored fields: a wrong or missing value becomes the default, never an exception.

Records outlive code. A field added later is missing from old records; a field written by a newer or buggy
version may have an unexpected type. Loading must not fail a user's turn because of either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def whole_number(data: Mapping[str, Any], key: str, default: int | None = None) -> int | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return default
    return value


def flag(data: Mapping[str, Any], key: str) -> bool:
    return data.get(key) is True
