"""The one rule for names, shared by the first-contact question and the profile dialog."""

from __future__ import annotations

NAME_MAX_LENGTH = 50


def check_name(text: str | None) -> str | None:
    """Why ``text`` is not acceptable as a name (after trimming), or None when it is."""
    name = (text or "").strip()
    if not name:
        return "I need your name as text"
    if len(name) > NAME_MAX_LENGTH:
        return f"a name can be at most {NAME_MAX_LENGTH} characters and that one has {len(name)}"
    return None
