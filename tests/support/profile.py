"""The profile dialog as the tests walk it: its questions in order, what each asks, and the answers that lead on.

``QUESTIONS`` is the one table: for each question, the prompt id a stored dialog stack names, the text it asks
(the dialog's own constant) and the answer a test gives when it does not care. A test says only the answers that
matter to it and where to stop::

    await user.say_all(*answers(name="Grace", age="42", until="picture"))  # "profile", "Car", "Grace", "yes", "42"

Adding a question to the dialog is one row here (and the new waterfall id in tests/bot/test_schema_rules.py);
every test that walks the profile then walks the new question too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dialogs.profile_dialog import (
    AGE_QUESTION,
    CONFIRM_QUESTION,
    NAME_QUESTION,
    PICTURE_QUESTION,
    SKIP,
    TRANSPORT_QUESTION,
    WANTS_AGE_QUESTION,
    YES,
)
from dialogs.prompts import normalized

#: The command that starts the dialog.
START = "profile"


def _always(answers: Mapping[str, object]) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class Question:
    """One question of the profile dialog."""

    key: str  # how tests name it: answers(transport="Bus", until="name")
    prompt: str  # the prompt's dialog id, as a stored dialog stack names it
    asks: str  # the question (a part of what the bot says when it asks it)
    default: object  # the answer when the test gives none: text, or an attachment (HTTP: its JSON)
    asked: Callable[[Mapping[str, object]], bool] = _always  # whether the earlier answers lead to it


QUESTIONS = (
    Question("transport", "profile.transport", TRANSPORT_QUESTION, "Car"),
    Question("name", "profile.name", NAME_QUESTION, "keep"),
    Question("wants_age", "profile.wants-age", WANTS_AGE_QUESTION, "no"),
    Question("age", "profile.age", AGE_QUESTION, "42", lambda given: normalized(str(given["wants_age"])) in YES),
    Question("picture", "profile.picture", PICTURE_QUESTION, SKIP),
    Question("confirm", "profile.confirm", CONFIRM_QUESTION, "yes"),
)
BY_KEY = {question.key: question for question in QUESTIONS}


def _chosen(given: Mapping[str, object]) -> dict[str, object]:
    unknown = set(given) - set(BY_KEY)
    if unknown:
        raise ValueError(f"the profile dialog asks no question {sorted(unknown)}; it asks {list(BY_KEY)}")
    chosen = {question.key: given.get(question.key, question.default) for question in QUESTIONS}
    if "age" in given and "wants_age" not in given:
        chosen["wants_age"] = "yes"  # giving an age means wanting to give it
    return chosen


def asked(**given: object) -> list[Question]:
    """The questions the dialog asks, in order, when answered with ``given`` (and the defaults)."""
    chosen = _chosen(given)
    return [question for question in QUESTIONS if question.asked(chosen)]


def answers(*, since: str | None = None, until: str | None = None, **given: object) -> list[object]:
    """``profile``, then the answers to each question the dialog asks, in order.

    ``until``: stop when that question has been asked (its answer is not sent); None answers every question,
    the confirmation too. ``since``: only the answers after the one to that question (the test sent it itself).
    ``given``: answers by question key; the others are the defaults.
    """
    chosen = _chosen(given)
    keys = [question.key for question in asked(**given)]
    for key in (since, until):
        if key is not None and key not in keys:
            raise ValueError(f"with these answers the dialog never asks {key!r}; it asks {keys}")
    sent: list[object] = [START, *(chosen[key] for key in keys)]
    end = len(sent) if until is None else keys.index(until) + 1
    start = 0 if since is None else keys.index(since) + 2
    return sent[start:end]


def asks(key: str) -> str:
    """What the question ``key`` asks (a part of the bot's text when it asks it)."""
    return BY_KEY[key].asks


def after(key: str, **given: object) -> Question | None:
    """The question the dialog asks after ``key`` (None when ``key`` is the last), answered with ``given``."""
    keys = [question.key for question in asked(**given)]
    following = asked(**given)[keys.index(key) + 1 :]
    return following[0] if following else None
