"""What a turn asks of the channel once its state is saved, in the order the bot asked: a reply (``POST``), an
update (``PUT``) or a deletion (``DELETE``) of an activity, as the Bot Connector API defines them.

The turn pipeline buffers these (``hosting.pipeline``) and ``hosting.replies`` carries them to the serviceUrl.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from botbuilder.schema import Activity


class Method(enum.StrEnum):
    """The HTTP method of a request to the channel, and what it does to an activity."""

    POST = "POST"  # a new activity (a reply, or a message to the conversation)
    PUT = "PUT"  # replace an activity the channel already shows
    DELETE = "DELETE"  # remove it


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One request to the channel. ``activity`` is the body of ``POST`` and ``PUT``; for ``DELETE`` only its
    ``service_url``, ``conversation`` and ``id`` are used. ``provisional_id`` is the id ``send_activity`` gave
    the bot for a reply before the channel gave it its own (replies leave after the turn)."""

    method: Method
    activity: Activity
    provisional_id: str | None = None


def replies_of(outgoing: list[Outgoing]) -> list[Activity]:
    """The new activities among ``outgoing`` (what an ``expectReplies`` caller gets in its answer)."""
    return [item.activity for item in outgoing if item.method == Method.POST]
