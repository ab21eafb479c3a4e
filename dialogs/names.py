"""The one rule for names, shared by the first-contact question, the profile dialog and the ``name`` dialog.

A greeting is never a name: the welcome ends with "What's your name?" and people answer it with "hello".
"""

from __future__ import annotations

import unicodedata
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.dialogs.prompts import PromptOptions, PromptValidatorContext

from .prompts import BoundedTextPrompt, normalized

NAME_MAX_LENGTH = 50
GREETINGS = frozenset(
    {
        "hi",
        "hello",
        "hey",
        "hiya",
        "howdy",
        "yo",
        "hallo",
        "hola",
        "greetings",
        "good morning",
        "good afternoon",
        "good evening",
        "good day",
        "morning",
        "evening",
        "hi there",
        "hello there",
        "hey there",
    }
)
GREET_BACK = "Hello to you too!"
#: Why a name is refused (``problem``: what ``check_name`` says), before the question is asked again.
REFUSED_NAME_TEXT = "Sorry, {problem}."
# Answers to "What name should I store? (Type keep ...)" that mean the name already stored, not a new one.
KEEP_ANSWERS = frozenset({"keep", "keep it", "same", "the same", "yes", "ok", "okay", "unchanged"})
# Unicode categories a name may not contain: controls (Cc), format characters (Cf: bidi overrides such as U+202E,
# zero-width spaces and joiners, the byte-order mark), surrogates, private-use and unassigned code points, and line
# or paragraph separators. They make a name display as something else than what it is.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def check_name(text: str | None) -> str | None:
    """Why ``text`` is not acceptable as a name (after trimming), or None when it is."""
    name = (text or "").strip()
    if not name:
        return "I need your name as text"
    if len(name) > NAME_MAX_LENGTH:
        return f"a name can be at most {NAME_MAX_LENGTH} characters and that one has {len(name)}"
    if any(unicodedata.category(char) in _REFUSED_CATEGORIES for char in name):
        return (
            "a name can't contain control or invisible characters "
            "(line breaks, zero-width spaces, text-direction overrides)"
        )
    return None


def chosen_name(answer: str, current: str) -> str:
    """The name meant by ``answer`` to a question that offered to keep ``current`` ("keep", "yes", ... keep it)."""
    name = answer.strip()
    if current and normalized(name) in KEEP_ANSWERS:
        return current
    return name


def is_greeting(text: str | None) -> bool:
    """Whether the whole message is a greeting ("Hi!", "good  Morning.", "hey there :)"), any case."""
    return normalized(text) in GREETINGS


async def _validate_name(prompt: PromptValidatorContext) -> bool:
    if not prompt.recognized.succeeded or is_greeting(prompt.recognized.value):
        return False
    return check_name(prompt.recognized.value) is None


class NamePrompt(BoundedTextPrompt):
    """A text prompt for a name: the name rule applies, and a greeting is greeted back and asked again."""

    def __init__(self, dialog_id: str) -> None:
        super().__init__(dialog_id, _validate_name)

    async def on_prompt(
        self, turn_context: TurnContext, state: dict[str, Any], options: PromptOptions, is_retry: bool
    ) -> None:
        if is_retry:
            text = turn_context.activity.text
            problem = None if is_greeting(text) else check_name(text)
            if is_greeting(text):
                await turn_context.send_activity(GREET_BACK)
                is_retry = False
            elif problem:  # say exactly what is wrong, then ask the question itself again
                await turn_context.send_activity(REFUSED_NAME_TEXT.format(problem=problem))
                is_retry = False
        await super().on_prompt(turn_context, state, options, is_retry)
