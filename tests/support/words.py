"""What the sample says, as the tests match it: every matcher here is built from the sample's own texts.

The wording of each reply lives in one place, the sample's constants (``bots.state_bot.ECHO_TEXT``,
``bots.commands.ASK_NAME``, the dialogs' questions, ...). Tests never copy those words: they build the reply they
expect from the constants (``thanks``, ``welcome_back``, ``stranger``) or read a reply back through a pattern made
from the template (``expect_echo``, ``echo_of``). Rewording a reply therefore fails only the test that pins the
wording on purpose, tests/bot/test_wording.py; the others keep checking what the reply *means*.

A template's fields (``{name}``, ``{number}``, ...) become named groups; ``number`` is digits, the others any text.
``loose=True`` also accepts what Web Chat's typesetting makes of a text (curly quotes, line breaks).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import cache

from bots.commands import ASK_NAME, HELP_TEXT
from bots.state_bot import ECHO_TEXT, NAME_TAKEN_TEXT, STRANGER_TEXT, WELCOME_BACK_TEXT, WELCOME_TEXT

__all__ = [
    "Echo",
    "as_typeset",
    "echo_number",
    "echo_of",
    "echo_pattern",
    "expect_echo",
    "in_browser",
    "is_welcome",
    "stranger",
    "template_pattern",
    "thanks",
    "welcome_back",
]

#: What a field of a template may hold; any other field holds any text.
_FIELD_PATTERNS = {"number": r"\d+"}
#: What Web Chat's typesetting may make of a quote: straight, or curly (opening or closing).
_QUOTES = {"'": "['\u2018\u2019]", '"': '["\u201c\u201d]'}


@dataclass(frozen=True, slots=True)
class Echo:
    """An echo read back: who sent what, its number in the conversation, when, and on which channel."""

    name: str
    text: str
    number: int
    time: str
    channel: str


def _literal(text: str, *, loose: bool) -> str:
    if not loose:
        return re.escape(text)
    return as_typeset(text)


def as_typeset(text: str) -> str:
    """A regular expression (source) for ``text`` as Web Chat may show it: any quote straight or curly, and white
    space as any or none (a line break can be an element boundary, which leaves no white space in the page's text)."""
    pattern = []
    for part in re.split(r"(\s+)", text):
        if part.isspace():
            pattern.append(r"\s*")
        elif part:
            pattern.append("".join(_QUOTES.get(char) or re.escape(char) for char in part))
    return "".join(pattern)


@cache
def _compiled(template: str, known: tuple[tuple[str, str], ...], loose: bool) -> re.Pattern[str]:
    values = dict(known)
    parts: list[str] = []
    seen: set[str] = set()
    for literal, field, _spec, _conversion in string.Formatter().parse(template):
        parts.append(_literal(literal, loose=loose))
        if field is None:
            continue
        if field in values:
            parts.append(_literal(values[field], loose=loose))
        elif field in seen:
            parts.append(f"(?P={field})")
        else:
            seen.add(field)
            parts.append(f"(?P<{field}>{_FIELD_PATTERNS.get(field, '.*?')})")
    return re.compile("".join(parts), re.DOTALL)


def template_pattern(template: str, *, loose: bool = False, **known: object) -> re.Pattern[str]:
    """A pattern for what ``template.format(...)`` produces: each field a named group, or the value in ``known``.

    Use ``fullmatch`` for a whole reply and ``search`` for a part of a longer text.
    """
    return _compiled(template, tuple(sorted((field, str(value)) for field, value in known.items())), loose)


def echo_pattern(*, loose: bool = False, **known: object) -> re.Pattern[str]:
    """The echo (``ECHO_TEXT``), with the fields in ``known`` fixed (``name="Ada", text="hello"``)."""
    return template_pattern(ECHO_TEXT, loose=loose, **known)


def in_browser(pattern: re.Pattern[str]) -> str:
    """``pattern``'s source as a JavaScript regular expression (Playwright's ``has_text``): no named groups."""
    if "(?P=" in pattern.pattern:
        raise ValueError("a field that repeats cannot be matched in the browser")
    return re.sub(r"\(\?P<\w+>", "(?:", pattern.pattern)


def echo_of(reply: str, *, loose: bool = False) -> Echo | None:
    """``reply`` read as an echo, or None when it is not exactly one echo."""
    found = echo_pattern(loose=loose).fullmatch(reply)
    if found is None:
        return None
    fields = found.groupdict()
    return Echo(
        name=fields.get("name", ""),
        text=fields.get("text", ""),
        number=int(fields.get("number") or 0),
        time=fields.get("time", ""),
        channel=fields.get("channel", ""),
    )


def expect_echo(reply: str, text: str, name: str | None = None, *, loose: bool = False) -> Echo:
    """The echo ``reply`` is; fails the test unless it is the echo of ``text`` (sent by ``name``, when given)."""
    echo = echo_of(reply, loose=loose)
    if echo is None:
        raise AssertionError(f"not an echo (template {ECHO_TEXT!r}): {reply!r}")
    if echo.text != text or (name is not None and echo.name != name):
        raise AssertionError(f"expected the echo of {text!r} by {name or 'anyone'}, got {echo}")
    return echo


def echo_number(reply: str, *, loose: bool = False) -> int:
    """The message's number in its conversation, as its echo states it (fails the test if ``reply`` is no echo)."""
    echo = echo_of(reply, loose=loose)
    if echo is None:
        raise AssertionError(f"not an echo (template {ECHO_TEXT!r}): {reply!r}")
    return echo.number


def thanks(name: str) -> str:
    """The reply to a first name the bot takes."""
    return NAME_TAKEN_TEXT.format(name=name)


def welcome_back(name: str) -> str:
    """The welcome of a member the bot knows by ``name``."""
    return WELCOME_BACK_TEXT.format(name=name)


def stranger() -> str:
    """The reply to a message from someone whose name the bot does not know (nothing pending)."""
    return f"{STRANGER_TEXT} {ASK_NAME}"


def is_welcome(text: str) -> bool:
    """Whether ``text`` is the welcome of a stranger: it says what the bot is, lists the commands, asks the name."""
    return text.startswith(WELCOME_TEXT) and HELP_TEXT in text and text.rstrip().endswith(ASK_NAME)
