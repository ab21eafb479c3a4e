"""hosting/storage/codec.py on its own: what valid state is stored as (byte for byte), and that reading anything else
either gives state this code can use and store again, or raises ``ValueError``, never another exception."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botbuilder.dialogs import DialogInstance, DialogState
from botbuilder.dialogs.choices import Choice, ListStyle
from botbuilder.dialogs.prompts import PromptOptions
from botbuilder.schema import Activity, CardAction, SuggestedActions

from hosting.storage import codec
from hosting.storage.codec import MAX_DEPTH, StateEncodingError


def state() -> dict[str, Any]:
    """Every kind of value the codec knows, as the profile dialog keeps them mid-question."""
    prompt = PromptOptions(
        prompt=Activity(
            type="message",
            text="How do you usually get around?",
            input_hint="expectingInput",
            suggested_actions=SuggestedActions(actions=[CardAction(type="imBack", title="Car", value="Car")]),
        ),
        retry_prompt=Activity(type="message", text="Please pick one."),
        choices=[
            Choice("Car"),
            Choice("Bus", CardAction(type="imBack", title="Bus", value="Bus"), ["coach"]),
            "Bicycle",
        ],
        style=ListStyle.suggested_action,
        validations={"min": 1},
        number_of_attempts=2,
    )
    waterfall = {
        "options": None,
        "values": {"draft": {"since": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}},
        "instanceId": "i-1",
        "stepIndex": 0,
    }
    inner = DialogState(
        [
            DialogInstance("profile.transport", {"options": prompt, "state": {}}),
            DialogInstance("profile.steps", waterfall),
        ]
    )
    return {
        "DialogState": DialogState([DialogInstance("profile", {"dialogs": inner})]),
        "MemberData": {"schema_version": 1, "asked_for_name": False},
        "ratio": 1.5,
        "note": "café ✓",
        "list": [1, [2, None], True],
    }


# Written by the codec before reads were validated: what is stored must not change (records outlive code).
STORED = (
    '{"DialogState":{"$type":"DialogState","dialogStack":[{"$type":"DialogInstance","id":"profile","state":{"dialogs":'
    '{"$type":"DialogState","dialogStack":[{"$type":"DialogInstance","id":"profile.transport","state":{"options":'
    '{"$type":"PromptOptions","prompt":{"$type":"schema.Activity","value":{"type":"message","text":"How do you '
    'usually get around?","inputHint":"expectingInput","suggestedActions":{"actions":[{"type":"imBack","title":"Car",'
    '"value":"Car"}]}}},"retryPrompt":{"$type":"schema.Activity","value":{"type":"message","text":"Please pick one."}},'
    '"choices":[{"$type":"Choice","value":"Car","action":null,"synonyms":null},{"$type":"Choice","value":"Bus",'
    '"action":{"$type":"schema.CardAction","value":{"type":"imBack","title":"Bus","value":"Bus"}},"synonyms":'
    '["coach"]},"Bicycle"],"style":{"$type":"ListStyle","name":"suggested_action"},"validations":{"min":1},'
    '"numberOfAttempts":2},"state":{}}},{"$type":"DialogInstance","id":"profile.steps","state":{"options":null,'
    '"values":{"draft":{"since":{"$type":"datetime","iso":"2026-01-02T03:04:05+00:00"}}},"instanceId":"i-1",'
    '"stepIndex":0}}]}}}]},"MemberData":{"schema_version":1,"asked_for_name":false},"ratio":1.5,"note":"café ✓",'
    '"list":[1,[2,null],true]}'
)


def test_valid_state_is_stored_exactly_as_before() -> None:
    assert codec.dumps(state()) == STORED


def test_stored_state_reads_back_into_the_sdk_objects_and_stores_the_same() -> None:
    document = codec.loads(STORED)

    [component] = document["DialogState"].dialog_stack
    prompt, waterfall = component.state["dialogs"].dialog_stack
    options = prompt.state["options"]
    assert isinstance(options, PromptOptions)
    assert isinstance(options.prompt, Activity)
    assert options.style is ListStyle.suggested_action
    assert options.choices[1].action.title == "Bus"
    assert waterfall.state["values"]["draft"]["since"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert codec.dumps(document) == STORED


def test_prompt_options_and_choices_without_optional_fields_get_the_sdk_defaults() -> None:
    """An older record may lack a field: read tolerantly, as the SDK's constructors default it."""
    document = codec.loads(
        '{"o": {"$type": "PromptOptions", "choices": [{"$type": "Choice", "value": "Car"}]}, "when": null}'
    )

    options = document["o"]
    assert (options.prompt, options.style, options.number_of_attempts) == (None, None, 0)
    assert (options.choices[0].value, options.choices[0].action, options.choices[0].synonyms) == ("Car", None, None)


# -- what is refused -------------------------------------------------------------------------------------------


def nested(levels: int) -> str:
    """A document whose deepest array is at nesting level ``levels`` (the document itself is level 1)."""
    return '{"x":' + "[" * (levels - 1) + "]" * (levels - 1) + "}"


def member(dialog_state: object) -> str:
    return json.dumps({"DialogState": dialog_state})


REFUSED = {
    "not JSON": '{"DialogState": {"$type": "Dialo',
    "not UTF-8": b'{"note": "caf\xe9"}',
    "an array": '["DialogState"]',
    "a string": '"x"',
    "null": "null",
    "a tagged object at the top": '{"$type": "DialogState", "dialogStack": []}',
    "NaN": '{"ratio": NaN}',
    "Infinity": '{"ratio": -Infinity}',
    "a number beyond a double": '{"ratio": 1e999}',
    "unknown $type": member({"$type": "DialogStack"}),
    "$type null": member({"$type": None, "dialogStack": []}),
    "$type a number": member({"$type": 5}),
    "$type a list": member({"$type": ["DialogState"], "dialogStack": []}),
    "schema. of no model": member({"$type": "schema.Model", "value": {}}),
    "schema. of a name that is no model": member({"$type": "schema.Activity.__class__", "value": {}}),
    "DialogState without dialogStack": member({"$type": "DialogState"}),
    "dialogStack an object": member({"$type": "DialogState", "dialogStack": {}}),
    "dialogStack of plain objects": member({"$type": "DialogState", "dialogStack": [{"id": "profile"}]}),
    "DialogInstance without state": member({"$type": "DialogInstance", "id": "profile"}),
    "DialogInstance without id": member({"$type": "DialogInstance", "state": {}}),
    "DialogInstance id a number": member({"$type": "DialogInstance", "id": 7, "state": {}}),
    "DialogInstance state a list": member({"$type": "DialogInstance", "id": "p", "state": []}),
    "DialogInstance state null": member({"$type": "DialogInstance", "id": "p", "state": None}),
    "PromptOptions prompt a string": member({"$type": "PromptOptions", "prompt": "How?"}),
    "PromptOptions prompt another model": member(
        {"$type": "PromptOptions", "prompt": {"$type": "schema.CardAction", "value": {}}}
    ),
    "PromptOptions choices a string": member({"$type": "PromptOptions", "choices": "Car"}),
    "PromptOptions choices of numbers": member({"$type": "PromptOptions", "choices": [1]}),
    "PromptOptions style a string": member({"$type": "PromptOptions", "style": "list"}),
    "PromptOptions numberOfAttempts a string": member({"$type": "PromptOptions", "numberOfAttempts": "1"}),
    "PromptOptions numberOfAttempts a bool": member({"$type": "PromptOptions", "numberOfAttempts": True}),
    "Choice without value": member({"$type": "Choice"}),
    "Choice action a string": member({"$type": "Choice", "value": "Car", "action": "imBack"}),
    "Choice synonyms of numbers": member({"$type": "Choice", "value": "Car", "synonyms": [1]}),
    "ListStyle of no name": member({"$type": "ListStyle", "name": "fancy"}),
    "ListStyle name a list": member({"$type": "ListStyle", "name": ["none"]}),
    "datetime not ISO": member({"$type": "datetime", "iso": "yesterday"}),
    "datetime iso a number": member({"$type": "datetime", "iso": 5}),
    "schema.Activity value a string": member({"$type": "schema.Activity", "value": "hi"}),
    "schema.Activity value missing": member({"$type": "schema.Activity"}),
    "schema.Activity msrest cannot read": member({"$type": "schema.Activity", "value": {"timestamp": "noon"}}),
    f"nested {MAX_DEPTH + 1} levels": nested(MAX_DEPTH + 1),
    "nested 1,000 levels": nested(1000),
    "nested beyond the JSON parser": nested(100_000),
    "nested deep inside an Activity": member(
        {"$type": "schema.Activity", "value": {"value": json.loads(nested(MAX_DEPTH))}}
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_a_shape_the_codec_does_not_write_is_refused_with_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        codec.loads(REFUSED[name])


def test_the_deepest_nesting_allowed_still_reads() -> None:
    assert codec.loads(nested(MAX_DEPTH))["x"]


def test_state_nested_deeper_than_can_be_read_is_refused_when_saved() -> None:
    deep: list[Any] = []
    for _ in range(MAX_DEPTH):
        deep = [deep]
    with pytest.raises(StateEncodingError, match="deeper than"):
        codec.dumps({"x": deep})
    with pytest.raises(StateEncodingError, match="deeper than"):
        codec.dumps({"x": Activity(type="message", value=deep)})


# -- every field of every tagged object, damaged every way -----------------------------------------------------

JUNK: tuple[object, ...] = (None, True, 0, -1, 1.5, "", "x", [], [1], ["x"], {}, {"a": 1}, {"$type": "Nope"})
MISSING = object()


def tagged_objects(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every object with a ``$type`` in parsed stored JSON, with its path."""
    if isinstance(value, dict):
        if codec.TYPE_TAG in value:
            yield path, value
        for key, item in value.items():
            yield from tagged_objects(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from tagged_objects(item, (*path, index))


def damaged_variants() -> Iterator[tuple[str, str]]:
    parsed = json.loads(STORED)
    for path, obj in tagged_objects(parsed):
        for field in obj:
            for junk in (MISSING, *JUNK):
                variant = copy.deepcopy(parsed)
                target = variant
                for step in path:
                    target = target[step]
                if junk is MISSING:
                    del target[field]
                else:
                    target[field] = junk
                yield (
                    f"{'/'.join(map(str, path))}.{field}={'missing' if junk is MISSING else repr(junk)}",
                    json.dumps(variant),
                )


def test_every_damaged_field_reads_as_storable_state_or_raises_a_value_error() -> None:
    """A tolerant read must give state that stores again (or every later save of it would fail)."""
    escaped: list[str] = []
    tolerated = refused = 0
    for name, text in damaged_variants():
        try:
            codec.dumps(codec.loads(text))
        except ValueError:
            refused += 1
        except Exception as error:  # anything else escapes a read: the bug this test is for
            escaped.append(f"{name}: {type(error).__name__}: {error}")
        else:
            tolerated += 1

    assert escaped == []
    assert refused > 400  # the test damaged something
    assert tolerated > 0
