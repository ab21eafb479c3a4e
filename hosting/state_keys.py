"""The storage keys of a turn's states, built from ids the request chose, so that no id can reach another's record.

The SDK's states join ids with ``/`` as they come: ``{channel}/users/{user}``, ``{channel}/conversations/{id}`` and
``{channel}/conversations/{id}/users/{user}/{namespace}``. A conversation id ``c1/users/u2/`` then makes the
ConversationState key ``<channel>/conversations/c1/users/u2/``, which is user u2's PrivateConversationState record
in c1. Here every id becomes one key segment: ``/`` is written ``*2f`` and the escape character ``*`` itself
``*2a`` (the notation of ``hosting.storage.keys``), so

* an id never adds a ``/`` to a key: the key's shape (and ``hosting.storage.base.ExpiryPolicy.ttl_for``, which reads it
  by ``/``) is the one its state chose;
* different ids give different segments (every ``*`` in a segment starts an escape, so ``id_of`` undoes it);
* an ordinary id, without ``/`` or ``*``, is its own segment: the keys of records stored before this escaping
  existed are unchanged, byte for byte.
"""

from __future__ import annotations

import re

ESCAPE_CHAR = "*"
_ESCAPED = {ESCAPE_CHAR: "*2a", "/": "*2f"}
_UNESCAPED = {code: char for char, code in _ESCAPED.items()}
_ESCAPE_SEQUENCE = re.compile(r"\*(?:2a|2f)")


def key_segment(identifier: str) -> str:
    """``identifier`` as one segment of a storage key: ``*`` -> ``*2a``, ``/`` -> ``*2f``, the rest unchanged."""
    if ESCAPE_CHAR not in identifier and "/" not in identifier:
        return identifier
    return identifier.replace(ESCAPE_CHAR, _ESCAPED[ESCAPE_CHAR]).replace("/", _ESCAPED["/"])


def id_of(segment: str) -> str:
    """The id ``key_segment`` made ``segment`` from (``ValueError`` for text it cannot have made)."""
    if "/" in segment or segment.count(ESCAPE_CHAR) != len(_ESCAPE_SEQUENCE.findall(segment)):
        raise ValueError(f"{segment!r} is not an escaped key segment")
    if ESCAPE_CHAR not in segment:
        return segment
    return _ESCAPE_SEQUENCE.sub(lambda match: _UNESCAPED[match.group()], segment)


def user_key(channel_id: str, user_id: str) -> str:
    """UserState's key: ``{channel}/users/{user}``."""
    return f"{key_segment(channel_id)}/users/{key_segment(user_id)}"


def conversation_key(channel_id: str, conversation_id: str) -> str:
    """ConversationState's key: ``{channel}/conversations/{conversation}``."""
    return f"{key_segment(channel_id)}/conversations/{key_segment(conversation_id)}"


def private_conversation_key(channel_id: str, conversation_id: str, user_id: str, namespace: str = "") -> str:
    """PrivateConversationState's key: ``{channel}/conversations/{conversation}/users/{user}/{namespace}``.

    ``namespace`` is the state's own (chosen in code, not by a request) and is kept as it is.
    """
    return f"{conversation_key(channel_id, conversation_id)}/users/{key_segment(user_id)}/{namespace}"
