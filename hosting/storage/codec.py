"""Plain-JSON encoding of bot state.

``BotState`` hands storage a dict per key. Most values in it are plain JSON already (our data models are stored
as ``to_dict()`` output), but botbuilder-dialogs keeps its own objects in conversation state: the dialog stack
(``DialogState`` / ``DialogInstance``) and, inside a prompt's frame, its ``PromptOptions`` with activities and
choices. The SDK's own stores pickle those with jsonpickle, which writes Python class paths into the record and
constructs whatever a record names when it is read back.

This module writes them as JSON objects tagged with ``"$type"`` instead, and only the handful of types listed
below can be rebuilt from a tag. Anything else that is not plain JSON is refused when the state is saved, with
the offending type in the message, rather than stored in a shape nobody can read back.

Reading validates rather than trusts: a record is data from the past (an older or newer bot, another writer, a
damaged disk). Every tagged object is checked field by field against what the SDK will do with it, and a
document nested deeper than ``MAX_DEPTH`` levels is refused, so that ``loads`` either returns state this code
can use or raises ``ValueError`` (which storage turns into ``CorruptRecordError`` for that record alone).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from botbuilder import schema
from botbuilder.dialogs import DialogInstance, DialogState
from botbuilder.dialogs.choices import Choice, ListStyle
from botbuilder.dialogs.prompts import PromptOptions
from msrest.serialization import Model

TYPE_TAG = "$type"
#: How deep objects and arrays may nest in a stored document (the document itself is level 1). The bot's deepest
#: state, a prompt inside a component, is about 16 levels; Cosmos DB refuses more than 128. Deeper state is refused
#: when saved (``StateEncodingError``) and when read (``ValueError``), so neither side recurses without bound.
MAX_DEPTH = 100

# botbuilder.schema models (Activity, Attachment, CardAction, ...) that may appear inside prompt options.
_SCHEMA_MODELS: dict[str, type[Model]] = {
    name: cls
    for name, cls in vars(schema).items()
    if isinstance(cls, type) and issubclass(cls, Model) and cls is not Model
}


# PromptOptions' attributes and their names in a stored record. Every attribute the SDK gives PromptOptions must be
# here, or it would be silently dropped from a prompt saved mid-dialog (tests/bot/test_schema_rules.py checks this
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


def _too_deep(level: int) -> str:
    return f"state nested deeper than {MAX_DEPTH} levels (level {level})"


def _encode(value: Any, level: int = 1) -> Any:
    if value is None or (isinstance(value, (bool, int, float, str)) and not isinstance(value, enum.Enum)):
        return value
    if level > MAX_DEPTH:
        raise StateEncodingError(_too_deep(level))
    if isinstance(value, ListStyle):
        return {TYPE_TAG: "ListStyle", "name": value.name}
    if isinstance(value, enum.Enum):
        raise StateEncodingError(f"cannot store enum {type(value).__name__}.{value.name} as JSON")
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateEncodingError(f"state keys must be strings, got {type(key).__name__}: {key!r}")
            if key == TYPE_TAG:
                raise StateEncodingError(f"{TYPE_TAG!r} is reserved and cannot be a key in stored state")
            encoded[key] = _encode(item, level + 1)
        return encoded
    if isinstance(value, (list, tuple)):
        return [_encode(item, level + 1) for item in value]
    if isinstance(value, DialogState):
        return {TYPE_TAG: "DialogState", "dialogStack": _encode(value.dialog_stack, level + 1)}
    if isinstance(value, DialogInstance):
        return {TYPE_TAG: "DialogInstance", "id": value.id, "state": _encode(value.state, level + 1)}
    if isinstance(value, PromptOptions):
        encoded_options = {TYPE_TAG: "PromptOptions"}
        for attribute, stored_name in PROMPT_OPTIONS_FIELDS.items():
            encoded_options[stored_name] = _encode(getattr(value, attribute), level + 1)
        return encoded_options
    if isinstance(value, Choice):
        return {
            TYPE_TAG: "Choice",
            "value": value.value,
            "action": _encode(value.action, level + 1),
            "synonyms": _encode(value.synonyms, level + 1),
        }
    if isinstance(value, datetime):
        return {TYPE_TAG: "datetime", "iso": value.isoformat()}
    if isinstance(value, Model) and _SCHEMA_MODELS.get(type(value).__name__) is type(value):
        serialized = value.serialize()
        if _depth_beyond(serialized, level + 1):
            raise StateEncodingError(_too_deep(level + 1))
        return {TYPE_TAG: f"schema.{type(value).__name__}", "value": serialized}
    raise StateEncodingError(
        f"cannot store a {type(value).__module__}.{type(value).__qualname__} in bot state; "
        "store plain JSON (for example a data model's to_dict()) instead"
    )


def _depth_beyond(value: Any, level: int) -> bool:
    """Whether plain JSON ``value``, found at ``level``, nests deeper than ``MAX_DEPTH`` (never recurses past it)."""
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return False
    return level > MAX_DEPTH or any(_depth_beyond(item, level + 1) for item in items)


def _wrong(tag: str, field: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{tag}.{field} must be {expected}, got {type(value).__name__} in stored state")


def _field(obj: dict[str, Any], tag: str, field: str, level: int) -> Any:
    """The decoded value of a field every stored ``tag`` object has."""
    if field not in obj:
        raise ValueError(f"a stored {tag} has no {field!r}")
    return _decode(obj[field], level + 1)


def _check_activity(tag: str, field: str, value: Any) -> None:
    if value is not None and not isinstance(value, schema.Activity):
        raise _wrong(tag, field, "an Activity or null", value)


def _decode_dialog_state(obj: dict[str, Any], level: int) -> DialogState:
    stack = _field(obj, "DialogState", "dialogStack", level)
    if not isinstance(stack, list) or not all(isinstance(frame, DialogInstance) for frame in stack):
        raise _wrong("DialogState", "dialogStack", "a list of DialogInstance", stack)
    return DialogState(stack)


def _decode_dialog_instance(obj: dict[str, Any], level: int) -> DialogInstance:
    dialog_id = obj.get("id")
    if not isinstance(dialog_id, str):
        raise _wrong("DialogInstance", "id", "a string", dialog_id)
    state = _field(obj, "DialogInstance", "state", level)
    if not isinstance(state, dict):
        raise _wrong("DialogInstance", "state", "an object", state)
    return DialogInstance(dialog_id, state)


def _decode_prompt_options(obj: dict[str, Any], level: int) -> PromptOptions:
    options = PromptOptions()  # a field missing from an older record keeps the SDK's default
    for attribute, stored_name in PROMPT_OPTIONS_FIELDS.items():
        if stored_name in obj:
            setattr(options, attribute, _decode(obj[stored_name], level + 1))
    _check_activity("PromptOptions", "prompt", options.prompt)
    _check_activity("PromptOptions", "retryPrompt", options.retry_prompt)
    choices = options.choices
    # The SDK's choice prompts take plain strings as choices too (ChoiceFactory._to_choices).
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, (Choice, str)) for c in choices)):
        raise _wrong("PromptOptions", "choices", "a list of Choice or string, or null", choices)
    if options.style is not None and not isinstance(options.style, ListStyle):
        raise _wrong("PromptOptions", "style", "a ListStyle or null", options.style)
    attempts = options.number_of_attempts
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise _wrong("PromptOptions", "numberOfAttempts", "an integer", attempts)
    return options


def _decode_choice(obj: dict[str, Any], level: int) -> Choice:
    value = obj.get("value")
    if not isinstance(value, str):
        raise _wrong("Choice", "value", "a string", value)
    action = _decode(obj.get("action"), level + 1)
    if action is not None and not isinstance(action, schema.CardAction):
        raise _wrong("Choice", "action", "a CardAction or null", action)
    synonyms = _decode(obj.get("synonyms"), level + 1)
    if synonyms is not None and not (isinstance(synonyms, list) and all(isinstance(s, str) for s in synonyms)):
        raise _wrong("Choice", "synonyms", "a list of strings or null", synonyms)
    return Choice(value, action, synonyms)


def _decode_list_style(obj: dict[str, Any], level: int) -> ListStyle:
    name = obj.get("name")
    if not isinstance(name, str) or name not in ListStyle.__members__:
        raise ValueError(f"ListStyle.name must be one of {sorted(ListStyle.__members__)}, got {name!r}")
    return ListStyle[name]


def _decode_datetime(obj: dict[str, Any], level: int) -> datetime:
    iso = obj.get("iso")
    if not isinstance(iso, str):
        raise _wrong("datetime", "iso", "an ISO 8601 string", iso)
    return datetime.fromisoformat(iso)  # ValueError for a string that is not one


def _decode_schema_model(tag: str, model: type[Model], obj: dict[str, Any], level: int) -> Model:
    value = obj.get("value")
    if not isinstance(value, dict):
        raise _wrong(tag, "value", "an object", value)
    if _depth_beyond(value, level + 1):
        raise ValueError(_too_deep(level + 1))
    try:
        return model.deserialize(value)
    except ValueError as err:  # msrest's DeserializationError is one
        raise ValueError(f"a stored {tag} cannot be read: {err}") from err


_DECODERS: dict[str, Callable[[dict[str, Any], int], Any]] = {
    "DialogState": _decode_dialog_state,
    "DialogInstance": _decode_dialog_instance,
    "PromptOptions": _decode_prompt_options,
    "Choice": _decode_choice,
    "ListStyle": _decode_list_style,
    "datetime": _decode_datetime,
}
_SCHEMA_PREFIX = "schema."


def _decode(value: Any, level: int) -> Any:
    """``value`` (parsed JSON found at nesting ``level``) with its tagged objects rebuilt; ``ValueError`` for
    anything that is not state this code wrote: an unknown tag, a field missing or of the wrong type, or nesting
    deeper than ``MAX_DEPTH``."""
    if isinstance(value, list):
        if level > MAX_DEPTH:
            raise ValueError(_too_deep(level))
        return [_decode(item, level + 1) for item in value]
    if not isinstance(value, dict):
        return value
    if level > MAX_DEPTH:
        raise ValueError(_too_deep(level))
    if TYPE_TAG not in value:
        return {key: _decode(item, level + 1) for key, item in value.items()}
    tag = value[TYPE_TAG]
    if not isinstance(tag, str):
        raise ValueError(f"{TYPE_TAG} must be a string, got {type(tag).__name__} in stored state")
    decoder = _DECODERS.get(tag)
    if decoder is not None:
        return decoder(value, level)
    model = _SCHEMA_MODELS.get(tag[len(_SCHEMA_PREFIX) :]) if tag.startswith(_SCHEMA_PREFIX) else None
    if model is not None:
        return _decode_schema_model(tag, model, value, level)
    raise ValueError(f"unknown {TYPE_TAG} {tag!r} in stored state")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e999: dumps could never write it back
        raise ValueError(f"the number {text} is out of range in stored state")
    return number


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (stored state never holds it)")


# Built once: json.loads with hooks would build a decoder per call, a third of the cost of a small record.
_JSON = json.JSONDecoder(parse_float=_finite, parse_constant=_no_constant)


def dumps(document: dict[str, Any]) -> str:
    """Serialize one state document to compact JSON text.

    Raises ``StateEncodingError`` for a value that has no JSON form.
    """
    return json.dumps(_encode(document), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def plain_json(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` as the plain JSON it is stored as (dialog objects in their ``$type``-tagged form)."""
    return json.loads(dumps(document))


def fingerprint(document: dict[str, Any]) -> str:
    """A string that changes exactly when what :func:`dumps` would store changes; cheap to compute.

    Plain JSON is encoded at C speed; only the dialog objects go through the tagged encoding.
    """
    return json.dumps(document, separators=(",", ":"), default=_encode)


def loads(text: str | bytes) -> dict[str, Any]:
    """Parse JSON text written by :func:`dumps` back into a state document.

    Raises ``ValueError`` when the text is not JSON (or not UTF-8), not an object, nested deeper than
    ``MAX_DEPTH``, holds NaN or an infinite number, or has a tagged object this module does not know or that is
    not shaped as :func:`dumps` writes it (a field missing or of the wrong type). Never anything else.
    """
    try:
        parsed = _JSON.decode(text.decode("utf-8") if isinstance(text, bytes) else text)
    except RecursionError as err:  # the parser's own limit, far deeper than MAX_DEPTH
        raise ValueError(_too_deep(MAX_DEPTH + 1)) from err
    document = _decode(parsed, 1) if isinstance(parsed, dict) else parsed
    if not isinstance(document, dict):
        raise ValueError(f"a stored state document must be a JSON object, got {type(document).__name__}")
    return document
