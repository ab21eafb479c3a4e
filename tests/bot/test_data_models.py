"""Data models: plain-JSON round trips, and records written by older versions still load."""

from __future__ import annotations

import json

import pytest

from data_models import ConversationData, MemberData, Picture, UserProfile, conversation_data, user_profile


def test_a_full_profile_round_trips_through_json() -> None:
    profile = UserProfile(name="Ada", transport="Bus", age=36, picture=Picture("image/png", "https://x/p.png", "p.png"))

    assert UserProfile.from_dict(json.loads(json.dumps(profile.to_dict()))) == profile


def test_conversation_data_round_trips_through_json() -> None:
    data = ConversationData(message_count=7)
    member = MemberData(asked_for_name=True)

    assert ConversationData.from_dict(json.loads(json.dumps(data.to_dict()))) == data
    assert MemberData.from_dict(json.loads(json.dumps(member.to_dict()))) == member


def test_records_carry_their_schema_version() -> None:
    assert UserProfile().to_dict()["schema_version"] == user_profile.SCHEMA_VERSION
    assert ConversationData().to_dict()["schema_version"] == conversation_data.SCHEMA_VERSION
    assert MemberData().to_dict()["schema_version"] == conversation_data.SCHEMA_VERSION


def test_a_profile_of_the_previous_shape_loads_with_defaults() -> None:
    """Version 0 of this bot stored only the name, under the same property, with no schema_version."""
    assert UserProfile.from_dict({"name": "Ada"}) == UserProfile(name="Ada")


def test_unknown_fields_are_ignored_and_wrong_types_become_defaults() -> None:
    stored = {
        "schema_version": user_profile.SCHEMA_VERSION + 1,  # a newer one: read tolerantly too
        "name": "Ada",
        "age": "forty",
        "transport": 3,
        "picture": {"content_type": "image/png"},
        "favourite_colour": "green",
    }

    assert UserProfile.from_dict(stored) == UserProfile(name="Ada")
    assert ConversationData.from_dict({"message_count": True, "x": 1}) == ConversationData()
    assert MemberData.from_dict({"asked_for_name": "yes"}) == MemberData()
    assert ConversationData.from_dict({"message_count": -3}) == ConversationData()


@pytest.mark.parametrize("stored", [None, [], "Ada", 42])
def test_something_that_is_not_a_record_loads_as_empty(stored: object) -> None:
    assert UserProfile.from_dict(stored) == UserProfile()
    assert ConversationData.from_dict(stored) == ConversationData()
    assert MemberData.from_dict(stored) == MemberData()
