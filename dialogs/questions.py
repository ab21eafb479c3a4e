"""Questions: messages that wait for an answer say so to the channel (``inputHint: expectingInput``).

``MessageFactory.text`` marks every message ``acceptingInput``, and a prompt keeps the hint it is given, so a
question built with it would not tell the channel (a speech client, say) that the bot now waits for the user.
"""

from __future__ import annotations

from botbuilder.core import MessageFactory
from botbuilder.schema import ActionTypes, Activity, CardAction, InputHints


def question(text: str, *, suggestions: tuple[str, ...] = ()) -> Activity:
    """A message that asks something, optionally with answers to tap."""
    if suggestions:
        actions = [CardAction(type=ActionTypes.im_back, title=value, value=value) for value in suggestions]
        return MessageFactory.suggested_actions(actions, text, input_hint=InputHints.expecting_input)
    return MessageFactory.text(text, input_hint=InputHints.expecting_input)
