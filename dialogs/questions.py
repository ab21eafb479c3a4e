"""Messages the bot builds: questions that say they wait for an answer, and plain text for the user's own words.

``MessageFactory.text`` marks every message ``acceptingInput``, and a prompt keeps the hint it is given, so a
question built with it would not tell the channel (a speech client, say) that the bot now waits for the user:
``question`` marks it ``expectingInput``.

Channels render a message's text as Markdown (Web Chat, Teams and the Emulator also render some HTML), so a name
such as ``<img src=...>`` or ``![](https://...)`` would make every viewer's browser fetch the name-giver's URL.
Every message that repeats something the user wrote is therefore sent with ``textFormat: plain`` (``plain=True``):
the channel shows it exactly as typed.
"""

from __future__ import annotations

from botbuilder.core import MessageFactory
from botbuilder.schema import ActionTypes, Activity, CardAction, InputHints, TextFormatTypes

#: Microsoft Teams shows at most three suggested actions (and none on a message with attachments).
MAX_SUGGESTIONS = 3


def question(text: str, *, suggestions: tuple[str, ...] = (), plain: bool = False) -> Activity:
    """A message that asks something, optionally with answers to tap; ``plain`` when it repeats the user's words."""
    if len(suggestions) > MAX_SUGGESTIONS:
        raise ValueError(f"at most {MAX_SUGGESTIONS} answers to tap (Teams shows no more), not {len(suggestions)}")
    if suggestions:
        actions = [CardAction(type=ActionTypes.im_back, title=value, value=value) for value in suggestions]
        activity = MessageFactory.suggested_actions(actions, text, input_hint=InputHints.expecting_input)
    else:
        activity = MessageFactory.text(text, input_hint=InputHints.expecting_input)
    if plain:
        activity.text_format = TextFormatTypes.plain
    return activity


def plain_text(text: str) -> Activity:
    """A message that repeats what the user wrote (their name, their message): shown as typed, never as markup."""
    activity = MessageFactory.text(text)
    activity.text_format = TextFormatTypes.plain
    return activity
