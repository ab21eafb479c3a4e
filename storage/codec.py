"""Plain-JSON encoding of bot state.

``BotState`` hands storage a dict per key. Most values in it are plain JSON already (our data models are stored
as ``to_dict()`` output), but botbuilder-dialogs keeps its own objects in conversation state: the dialog stack
(``DialogState`` / ``DialogInstance``) and, inside a prompt's frame, its ``PromptOptions`` with activities and
choices. The SDK's own stores pickle those with jsonpickle, which writes Python class paths into the record and
constructs whatever a record names when it is read back.

This module writes them as JSON objects tagged with ``"$type"`` instead, and only the handful of types listed
below can be rebuilt from a tag. Anything else that is not plain JSON is refused when the state is saved, with
the offending type in the message, rather than stored in a shape nobody can read back.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from botbuilder import schema
from botbuilder.dialogs import DialogInstance, DialogState
from botbuilder.dialogs.choices import Choice, ListStyle
from botbuilder.dialogs.prompts import PromptOptions
from msrest.serialization import Model

TYPE_TAG = "$type"

# botbuilder.schema models (Activity, Attachment, CardAction, ...) that may appear inside prompt options.
_SCHEMA_MODELS: dict[str, type[Model]] = {
    name: cls
    for name, cls in vars(schema).items()
    if isinstance(cls, type) and issubclass(cls, Model) and cls is not Model
}


# PromptOptions' attributes and their names in a stored record. Every attribute the SDK gives PromptOptions must be
# here, or it would be silently dropped from a prompt saved mid-dialog (tests/test_schema_rules.py checks this
# against the installed botbuilder-dialogs).
PROMPT_OPTIONS_FIELDS: dict[str, str] = {
    "prompt": "prompt",
    "retry_prompt": "retryPrompt",
    "choices": "choices",
    "style": "style",
    "validations": "validations",
    "number_of_attempts": "numberOfAttempts",
}


class StateEncodingError(TypeError):
    """The state holds a value that has no plain-JSON form."""


def _encode(value: Any) -> Any:
    if isinstance(value, ListStyle):
        return {TYPE_TAG: "ListStyle", "name": value.name}
    if isinstance(value, enum.Enum):
        raise StateEncodingError(f"cannot store enum {type(value).__name__}.{value.name} as JSON")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateEncodingError(f"state keys must be strings, got {type(key).__name__}: {key!r}")
            if key == TYPE_TAG:
                raise StateEncodingError(f"{TYPE_TAG!r} is reserved and cannot be a key in stored state")
            encoded[key] = _encode(item)
        return encoded
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, DialogState):
        return {TYPE_TAG: "DialogState", "dialogStack": _encode(value.dialog_stack)}
    if isinstance(value, DialogInstance):
        return {TYPE_TAG: "DialogInstance", "id": value.id, "state": _encode(value.state)}
    if isinstance(value, PromptOptions):
        encoded_options = {TYPE_TAG: "PromptOptions"}
        for attribute, stored_name in PROMPT_OPTIONS_FIELDS.items():
            encoded_options[stored_name] = _encode(getattr(value, attribute))
        return encoded_options
    if isinstance(value, Choice):
        return {
            TYPE_TAG: "Choice",
            "value": value.value,
            "action": _encode(value.action),
            "synonyms": _encode(value.synonyms),
        }
    if isinstance(value, datetime):
        return {TYPE_TAG: "datetime", "iso": value.isoformat()}
    if isinstance(value, Model) and _SCHEMA_MODELS.get(type(value).__name__) is type(value):
        return {TYPE_TAG: f"schema.{type(value).__name__}", "value": value.serialize()}
    raise StateEncodingError(
        f"cannot store a {type(value).__module__}.{type(value).__qualname__} in bot state; "
        "store plain JSON (for example a data model's to_dict()) instead"
    )


_DECODERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "DialogState": lambda obj: DialogState(_decode(obj["dialogStack"])),
    "DialogInstance": lambda obj: DialogInstance(obj["id"], _decode(obj["state"])),
    "PromptOptions": lambda obj: PromptOptions(
        **{attribute: _decode(obj.get(stored_name)) for attribute, stored_name in PROMPT_OPTIONS_FIELDS.items()}
    ),
    "Choice": lambda obj: Choice(obj["value"], _decode(obj["action"]), _decode(obj["synonyms"])),
    "ListStyle": lambda obj: ListStyle[obj["name"]],
    "datetime": lambda obj: datetime.fromisoformat(obj["iso"]),
}


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(TYPE_TAG)
    if tag is None:
        return {key: _decode(item) for key, item in value.items()}
    if tag in _DECODERS:
        return _DECODERS[tag](value)
    if isinstance(tag, str) and tag.startswith("schema.") and tag[len("schema.") :] in _SCHEMA_MODELS:
        return _SCHEMA_MODELS[tag[len("schema.") :]].deserialize(value["value"])
    raise ValueError(f"unknown {TYPE_TAG} {tag!r} in stored state")


def dumps(document: dict[str, Any]) -> str:
    """Serialize one state document to compact JSON text.

    Raises ``StateEncodingError`` for a value that has no JSON form.
    """
    return json.dumps(_encode(document), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fingerprint(document: dict[str, Any]) -> str:
    """A string that changes exactly when what :func:`dumps` would store changes; cheap to compute.

    Plain JSON is encoded at C speed; only the dialog objects go through the tagged encoding.
    """
    return json.dumps(document, separators=(",", ":"), default=_encode)


def loads(text: str | bytes) -> dict[str, Any]:
    """Parse JSON text written by :func:`dumps` back into a state document.

    Raises ``ValueError`` when the text is not JSON, not an object, or names a type this module does not know.
    """
    document = _decode(json.loads(text))
    if not isinstance(document, dict):
        raise ValueError(f"a stored state document must be a JSON object, got {type(document).__name__}")
    return document
