"""Prompts that a user's words cannot stall or trick.

botbuilder's ``ConfirmPrompt``, ``NumberPrompt`` and ``ChoicePrompt`` hand the whole message to the
recognizers-text library. Its cost grows with the square of the text ("y y y ..." of 12 KB took 19 s of event
loop, during which every other user and ``/healthz`` waited), and ``ConfirmPrompt`` takes the first yes-like word
anywhere in the message: "not sure", "yes no", "1 2" and "the first one" all counted as yes. Here:

* every prompt refuses an answer longer than ``MAX_ANSWER_CHARS`` before anything reads it, says why, and asks
  again (``BoundedPrompt``);
* yes/no, numbers and choices are recognised by whole-message rules in linear time (``YesNoPrompt``,
  ``WholeNumberPrompt``, ``ExactChoicePrompt``): an answer is one clear word or phrase, or it is asked again.
"""

from __future__ import annotations

import re
from typing import Any

from botbuilder.core import TurnContext
from botbuilder.dialogs import Dialog, DialogContext, DialogTurnResult
from botbuilder.dialogs.choices import Choice, FoundChoice
from botbuilder.dialogs.prompts import (
    ChoicePrompt,
    Prompt,
    PromptOptions,
    PromptRecognizerResult,
    TextPrompt,
)
from botbuilder.schema import ActivityTypes

MAX_ANSWER_CHARS = 256
TOO_LONG_TEXT = "That answer is too long for me to read ({length} characters; at most {limit})."

_APOSTROPHES = re.compile("['\u2019]")
_NOT_WORDS = re.compile(r"[^\w\s]+")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*")


def normalized(text: str | None) -> str:
    """``text`` in lower case, punctuation dropped, words separated by single spaces ("Yes!" -> "yes",
    "Don't." -> "dont")."""
    return " ".join(_NOT_WORDS.sub(" ", _APOSTROPHES.sub("", (text or "").lower())).split())


class BoundedPrompt(Prompt):
    """A prompt that never reads an answer longer than ``MAX_ANSWER_CHARS``: it says so and asks again.

    Mixed in before the SDK prompt class (``class P(BoundedPrompt, TextPrompt)``), so the bound applies before
    any recognizer or validator sees the text.
    """

    async def continue_dialog(self, dialog_context: DialogContext) -> DialogTurnResult:
        activity = dialog_context.context.activity
        length = len(activity.text or "")
        if activity.type != ActivityTypes.message or length <= MAX_ANSWER_CHARS:
            return await super().continue_dialog(dialog_context)
        await dialog_context.context.send_activity(TOO_LONG_TEXT.format(length=length, limit=MAX_ANSWER_CHARS))
        instance = dialog_context.active_dialog
        # The question itself again, not its retry text: the reason was just given.
        await self.on_prompt(
            dialog_context.context,
            instance.state[self.persisted_state],
            instance.state[self.persisted_options],
            False,
        )
        return Dialog.end_of_turn


class _SendsItsQuestion(Prompt):
    """``on_prompt`` for prompts of our own: the question, or the retry question when the answer was unclear."""

    async def on_prompt(
        self, turn_context: TurnContext, state: dict[str, Any], options: PromptOptions, is_retry: bool
    ) -> None:
        question = options.retry_prompt if is_retry and options.retry_prompt is not None else options.prompt
        if question is not None:
            await turn_context.send_activity(question)


class YesNoPrompt(BoundedPrompt, _SendsItsQuestion):
    """A yes/no question: the whole answer must be one of ``yes`` or one of ``no`` (case and punctuation aside).

    Anything else is not recognised, so the prompt asks again (or its validator decides). The result is a bool.
    """

    def __init__(self, dialog_id: str, yes: frozenset[str], no: frozenset[str], validator: object = None) -> None:
        super().__init__(dialog_id, validator)
        self.yes = yes
        self.no = no

    async def on_recognize(
        self, turn_context: TurnContext, state: dict[str, Any], options: PromptOptions
    ) -> PromptRecognizerResult:
        answer = normalized(turn_context.activity.text)
        if answer in self.yes:
            return PromptRecognizerResult(True, True)
        if answer in self.no:
            return PromptRecognizerResult(True, False)
        return PromptRecognizerResult(False)


class WholeNumberPrompt(BoundedPrompt, _SendsItsQuestion):
    """A number question: the answer must hold exactly one number ("42", "I'm 42"), and a whole one.

    "1 2", "42.5" and "forty-two" are not recognised (the retry question should say "as a whole number").
    """

    async def on_recognize(
        self, turn_context: TurnContext, state: dict[str, Any], options: PromptOptions
    ) -> PromptRecognizerResult:
        numbers = _NUMBER.findall(turn_context.activity.text or "")
        if len(numbers) != 1 or not re.fullmatch(r"[-+]?\d{1,9}", numbers[0]):
            return PromptRecognizerResult(False)
        return PromptRecognizerResult(True, int(numbers[0]))


class ExactChoicePrompt(BoundedPrompt, ChoicePrompt):
    """A choice among a few options: the answer names exactly one of them (its value or a synonym, as the whole
    answer or as one of its words: "Bus", "by bus", "the bus please") or is its number in the list ("2").

    The result is a ``FoundChoice``, as ``ChoicePrompt`` gives. Answers naming two options, or none, are asked
    again. The SDK's list and suggested-action rendering of the question is kept.
    """

    async def on_recognize(
        self, turn_context: TurnContext, state: dict[str, Any], options: PromptOptions
    ) -> PromptRecognizerResult:
        found = find_choice(turn_context.activity.text, options.choices or [])
        return PromptRecognizerResult(found is not None, found)


def find_choice(text: str | None, choices: list[Choice | str]) -> FoundChoice | None:
    """The one choice ``text`` names (see ``ExactChoicePrompt``), or None. Choices may be plain strings, as the SDK
    allows."""
    choices = [Choice(choice) if isinstance(choice, str) else choice for choice in choices]
    answer = normalized(text)
    if answer.isdigit() and 1 <= int(answer) <= len(choices):
        index = int(answer) - 1
        return FoundChoice(choices[index].value, index, 1.0)
    words = f" {answer} "
    named: list[tuple[int, str]] = []
    for index, choice in enumerate(choices):
        for name in (choice.value, *(choice.synonyms or [])):
            wanted = normalized(name)
            if wanted and f" {wanted} " in words:
                named.append((index, name))
                break
    if len(named) != 1:
        return None
    index, name = named[0]
    return FoundChoice(choices[index].value, index, 1.0 if normalized(name) == answer else 0.9, name)


class BoundedTextPrompt(BoundedPrompt, TextPrompt):
    """``TextPrompt`` with the answer bounded to ``MAX_ANSWER_CHARS``."""
