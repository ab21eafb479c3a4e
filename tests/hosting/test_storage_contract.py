"""The storage contract, run unchanged over every backend in tests/support/backends.py.

No test here knows which backend it runs on; wire-level details live in each backend's own test module.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import pytest
from botbuilder.core import MessageFactory, StoreItem
from botbuilder.dialogs import DialogInstance, DialogState
from botbuilder.dialogs.choices import Choice, ListStyle
from botbuilder.dialogs.prompts import PromptOptions

from hosting.storage import CorruptRecordError, Delete, ETagConflictError, StateStorage, StorageError, damaged_key
from hosting.storage.base import ExpiryPolicy
from hosting.storage.codec import StateEncodingError
from tests.support.azurite import ACCOUNT_KEY as AZURITE_ACCOUNT_KEY
from tests.support.backends import plant_raw
from tests.support.clock import Clock
from tests.support.cosmos_server import TEST_KEY as COSMOS_TEST_KEY

KEY = "emulator/users/user-1"


async def test_reading_absent_keys_returns_nothing(storage: StateStorage) -> None:
    assert await storage.read([KEY, "emulator/conversations/none"]) == {}
    assert await storage.read([]) == {}


async def test_a_written_item_reads_back_with_an_e_tag(storage: StateStorage) -> None:
    await storage.write({KEY: {"name": "Ada", "count": 3, "nested": {"list": [1, "two", None, True]}}})

    item = (await storage.read([KEY]))[KEY]

    assert item["name"] == "Ada"
    assert item["count"] == 3
    assert item["nested"] == {"list": [1, "two", None, True]}
    assert isinstance(item["e_tag"], str)
    assert item["e_tag"]


async def test_write_updates_the_callers_e_tag_so_a_second_save_does_not_conflict(storage: StateStorage) -> None:
    item: dict[str, object] = {"n": 1}
    await storage.write({KEY: item})
    first_tag = item["e_tag"]
    assert first_tag == (await storage.read([KEY]))[KEY]["e_tag"]

    item["n"] = 2
    await storage.write({KEY: item})

    stored = (await storage.read([KEY]))[KEY]
    assert stored["n"] == 2
    assert stored["e_tag"] == item["e_tag"] != first_tag


async def test_mutating_what_read_returned_changes_nothing_until_written(storage: StateStorage) -> None:
    await storage.write({KEY: {"tags": ["a"], "inner": {"x": 1}}})
    item = (await storage.read([KEY]))[KEY]

    item["tags"].append("b")
    item["inner"]["x"] = 2
    item["extra"] = True

    again = (await storage.read([KEY]))[KEY]
    assert again["tags"] == ["a"]
    assert again["inner"] == {"x": 1}
    assert "extra" not in again


async def test_a_stale_e_tag_is_refused_and_the_newer_record_kept(storage: StateStorage) -> None:
    await storage.write({KEY: {"v": "original"}})
    first = (await storage.read([KEY]))[KEY]
    second = (await storage.read([KEY]))[KEY]

    first["v"] = "winner"
    await storage.write({KEY: first})
    second["v"] = "loser"
    with pytest.raises(ETagConflictError):
        await storage.write({KEY: second})

    assert (await storage.read([KEY]))[KEY]["v"] == "winner"


async def test_a_first_write_does_not_overwrite_a_record_created_meanwhile(storage: StateStorage) -> None:
    await storage.write({KEY: {"v": "created first"}})

    with pytest.raises(ETagConflictError):
        await storage.write({KEY: {"v": "created second"}})

    assert (await storage.read([KEY]))[KEY]["v"] == "created first"


async def test_star_e_tag_creates_or_overwrites(storage: StateStorage) -> None:
    await storage.write({KEY: {"v": 1, "e_tag": "*"}})
    await storage.write({KEY: {"v": 2, "e_tag": "*"}})

    assert (await storage.read([KEY]))[KEY]["v"] == 2


async def test_writing_over_a_deleted_record_with_its_old_e_tag_conflicts(storage: StateStorage) -> None:
    await storage.write({KEY: {"v": 1}})
    item = (await storage.read([KEY]))[KEY]
    await storage.delete([KEY])

    with pytest.raises(ETagConflictError):
        await storage.write({KEY: item})
    assert await storage.read([KEY]) == {}


async def test_an_empty_e_tag_is_rejected(storage: StateStorage) -> None:
    with pytest.raises(ValueError, match="e_tag"):
        await storage.write({KEY: {"v": 1, "e_tag": ""}})
    assert await storage.read([KEY]) == {}


async def test_delete_removes_only_the_named_keys_and_ignores_absent_ones(storage: StateStorage) -> None:
    other = "emulator/users/user-2"
    await storage.write({KEY: {"v": 1}, other: {"v": 2}})

    await storage.delete([KEY, "emulator/users/never-existed"])

    assert await storage.read([KEY, other]) == {other: {"v": 2, "e_tag": (await storage.read([other]))[other]["e_tag"]}}


async def test_several_keys_are_read_at_once_and_duplicates_collapse(storage: StateStorage) -> None:
    keys = [f"emulator/conversations/c{i}" for i in range(5)]
    await storage.write({key: {"i": i} for i, key in enumerate(keys)})

    items = await storage.read([*keys, keys[0], "absent"])

    assert sorted(items) == sorted(keys)
    assert [items[key]["i"] for key in keys] == list(range(5))


@pytest.mark.parametrize(
    "key",
    [
        "msteams/users/29:1abc-DEF_ghi",
        "webchat/conversations/a/b\\c?d#e",
        "emulator/users/ünïcødé 名前 🤖",
        "directline/conversations/" + "x" * 300,
        "directline/conversations/" + "x" * 3000,  # over every service's name limit: a shortened, hashed name
        "slack/users/%2F..%2Fescape",
    ],
)
async def test_keys_with_awkward_characters_round_trip_without_colliding(storage: StateStorage, key: str) -> None:
    await storage.write({key: {"who": key}})
    await storage.write({key + "-twin": {"who": "twin"}})

    items = await storage.read([key, key + "-twin"])

    assert items[key]["who"] == key
    assert items[key + "-twin"]["who"] == "twin"


async def test_text_and_numbers_survive_exactly(storage: StateStorage) -> None:
    document = {"text": 'line1\nline2\t"quoted" \\ é 😀', "big": 2**53 - 1, "neg": -7, "float": 0.1, "empty": {}}
    await storage.write({KEY: dict(document)})

    item = (await storage.read([KEY]))[KEY]
    item.pop("e_tag")
    assert item == document


async def test_dialog_state_round_trips_as_objects(storage: StateStorage) -> None:
    options = PromptOptions(
        prompt=MessageFactory.text("How do you travel?"),
        retry_prompt=MessageFactory.text("Pick one of the options."),
        choices=[Choice("Car"), Choice("Bus", synonyms=["coach"])],
        style=ListStyle.suggested_action,
    )
    stack = DialogState(
        [
            DialogInstance("profile", {"stepIndex": 0, "values": {"draft": {"transport": None}}}),
            DialogInstance("transport-prompt", {"options": options, "state": {"attemptCount": 1}}),
        ]
    )
    await storage.write({KEY: {"DialogState": stack}})

    restored = (await storage.read([KEY]))[KEY]["DialogState"]

    assert isinstance(restored, DialogState)
    assert [frame.id for frame in restored.dialog_stack] == ["profile", "transport-prompt"]
    assert restored.dialog_stack[0].state["values"] == {"draft": {"transport": None}}
    prompt_options = restored.dialog_stack[1].state["options"]
    assert prompt_options.prompt.text == "How do you travel?"
    assert prompt_options.retry_prompt.text == "Pick one of the options."
    assert [choice.value for choice in prompt_options.choices] == ["Car", "Bus"]
    assert prompt_options.choices[1].synonyms == ["coach"]
    assert prompt_options.style is ListStyle.suggested_action


async def test_a_value_without_a_json_form_is_refused_and_nothing_is_stored(storage: StateStorage) -> None:
    class NotSerializable:
        pass

    with pytest.raises(StateEncodingError, match="NotSerializable"):
        await storage.write({KEY: {"oops": NotSerializable()}})
    assert await storage.read([KEY]) == {}


async def test_store_items_are_accepted_and_get_their_e_tag(storage: StateStorage) -> None:
    item = StoreItem(counter=1)
    await storage.write({KEY: item})

    assert item.e_tag == (await storage.read([KEY]))[KEY]["e_tag"]
    assert (await storage.read([KEY]))[KEY]["counter"] == 1


async def test_concurrent_first_writes_of_one_key_let_exactly_one_win(storage: StateStorage) -> None:
    results = await asyncio.gather(
        *(storage.write({KEY: {"writer": i}}) for i in range(5)),
        return_exceptions=True,
    )

    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert all(isinstance(result, ETagConflictError) for result in results if result is not None)
    assert (await storage.read([KEY]))[KEY]["writer"] == winners[0]


async def test_concurrent_updates_from_one_e_tag_let_exactly_one_win(storage: StateStorage) -> None:
    await storage.write({KEY: {"writer": None}})
    base = (await storage.read([KEY]))[KEY]

    results = await asyncio.gather(
        *(storage.write({KEY: {**base, "writer": i}}) for i in range(5)),
        return_exceptions=True,
    )

    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert all(isinstance(result, ETagConflictError) for result in results if result is not None)
    assert (await storage.read([KEY]))[KEY]["writer"] == winners[0]


async def test_describe_names_the_backend_and_no_secret(storage: StateStorage) -> None:
    described = storage.describe()

    assert described.startswith(storage.name)
    for secret in (AZURITE_ACCOUNT_KEY, "AccountKey", COSMOS_TEST_KEY, os.environ.get("COSMOS_KEY") or COSMOS_TEST_KEY):
        assert secret not in described


# -- several keys in one write ---------------------------------------------------------------------------------
# ``atomic_writes`` is what a backend promises; each test checks the promise the store under test makes.

USER = "emulator/users/user-1"
CONVERSATION = "emulator/conversations/conv-1"
THIRD = "emulator/conversations/conv-2"


async def test_several_new_keys_are_written_together_and_all_get_their_e_tags(storage: StateStorage) -> None:
    user: dict[str, object] = {"name": "Ada"}
    conversation: dict[str, object] = {"count": 1}

    await storage.write({USER: user, CONVERSATION: conversation})

    stored = await storage.read([USER, CONVERSATION])
    assert stored[USER]["e_tag"] == user["e_tag"]
    assert stored[CONVERSATION]["e_tag"] == conversation["e_tag"]
    assert (stored[USER]["name"], stored[CONVERSATION]["count"]) == ("Ada", 1)


async def test_a_conflict_on_a_later_key_is_all_or_nothing_or_stops_in_order(storage: StateStorage) -> None:
    await storage.write({USER: {"v": "user 1"}, CONVERSATION: {"v": "conversation 1"}})
    stored = await storage.read([USER, CONVERSATION])
    user, conversation = stored[USER], stored[CONVERSATION]
    user_tag = user["e_tag"]
    newer = dict(conversation, v="another turn's conversation")
    await storage.write({CONVERSATION: newer})  # makes ``conversation`` stale

    user["v"] = "user 2"
    conversation["v"] = "conversation 2"
    with pytest.raises(ETagConflictError):
        await storage.write({USER: user, CONVERSATION: conversation, THIRD: {"v": "never"}})

    stored = await storage.read([USER, CONVERSATION, THIRD])
    assert stored[CONVERSATION]["v"] == "another turn's conversation"
    assert THIRD not in stored  # after the failure nothing further is written, on any backend
    if storage.atomic_writes:
        assert stored[USER]["v"] == "user 1"
        assert user["e_tag"] == user_tag  # nothing committed, so the caller's e_tag is still the stored one
    else:
        assert stored[USER]["v"] == "user 2"  # written in the order given, before the conflicting key
        assert user["e_tag"] == stored[USER]["e_tag"] != user_tag


async def test_a_conflict_on_the_first_key_writes_nothing(storage: StateStorage) -> None:
    await storage.write({USER: {"v": "first"}})

    with pytest.raises(ETagConflictError):
        await storage.write({USER: {"v": "create-only again"}, CONVERSATION: {"v": "never"}})

    assert await storage.read([CONVERSATION]) == {}
    assert (await storage.read([USER]))[USER]["v"] == "first"


async def test_an_unstorable_later_item_is_refused_before_anything_is_written(storage: StateStorage) -> None:
    with pytest.raises(StateEncodingError):
        await storage.write({USER: {"v": 1}, CONVERSATION: {"oops": object()}})

    assert await storage.read([USER, CONVERSATION]) == {}


async def test_concurrent_multi_key_writes_from_one_snapshot_let_exactly_one_win(storage: StateStorage) -> None:
    await storage.write({USER: {"writer": None}, CONVERSATION: {"writer": None}})
    base = await storage.read([USER, CONVERSATION])

    results = await asyncio.gather(
        *(
            storage.write({USER: {**base[USER], "writer": i}, CONVERSATION: {**base[CONVERSATION], "writer": i}})
            for i in range(4)
        ),
        return_exceptions=True,
    )

    winners = [i for i, result in enumerate(results) if result is None]
    assert len(winners) == 1
    assert all(isinstance(result, ETagConflictError) for result in results if result is not None)
    stored = await storage.read([USER, CONVERSATION])
    assert stored[CONVERSATION]["writer"] == winners[0]
    assert stored[USER]["writer"] == winners[0]


# -- damaged records -------------------------------------------------------------------------------------------

DAMAGE = {
    "bad-json": "{not json",
    "unknown-type": '{"dialog":{"$type":"NoSuchType","x":1}}',
    "missing-field": '{"dialog":{"$type":"DialogInstance","id":"profile"}}',
    "too-deep": '{"v":' + "[" * 1000 + "]" * 1000 + "}",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
async def test_a_damaged_record_names_its_key_and_can_be_moved_aside(storage: StateStorage, damage: str) -> None:
    await storage.write({USER: {"v": "healthy"}})
    await plant_raw(storage, CONVERSATION, DAMAGE[damage])

    with pytest.raises(CorruptRecordError) as caught:
        await storage.read([USER, CONVERSATION])
    assert caught.value.key == CONVERSATION

    moved_to = await storage.move_aside(CONVERSATION)

    assert moved_to is not None
    assert moved_to == f"_damaged/{CONVERSATION}"
    assert await storage.read([CONVERSATION]) == {}
    with pytest.raises(CorruptRecordError):  # kept, still as damaged as it was
        await storage.read([moved_to])
    await storage.write({CONVERSATION: {"v": "fresh"}})  # create-only: the key is free again
    stored = await storage.read([USER, CONVERSATION])
    assert (stored[USER]["v"], stored[CONVERSATION]["v"]) == ("healthy", "fresh")


async def test_moving_aside_an_absent_key_returns_none(storage: StateStorage) -> None:
    assert await storage.move_aside(KEY) is None


async def test_the_latest_damaged_copy_of_a_key_is_kept_and_read_back_as_text(storage: StateStorage) -> None:
    await plant_raw(storage, CONVERSATION, "{first damage")
    await storage.move_aside(CONVERSATION)
    await plant_raw(storage, CONVERSATION, "{second damage")

    moved_to = await storage.move_aside(CONVERSATION)

    copies = await storage.read_damaged([CONVERSATION, USER])
    assert list(copies) == [CONVERSATION]  # USER has no damaged copy
    assert "{second damage" in copies[CONVERSATION]
    assert "{first damage" not in copies[CONVERSATION]
    assert moved_to == damaged_key(CONVERSATION)
    await storage.write({damaged_key(CONVERSATION): Delete()})
    assert await storage.read_damaged([CONVERSATION]) == {}


async def test_compact_keeps_every_record(storage: StateStorage) -> None:
    await storage.write({USER: {"v": 1}, CONVERSATION: {"v": 2}})
    await storage.delete([CONVERSATION])

    await storage.compact()

    assert {key: item["v"] for key, item in (await storage.read([USER, CONVERSATION])).items()} == {USER: 1}


# -- deletes in a write ---------------------------------------------------------------------------------------


async def test_a_delete_with_the_e_tag_read_deletes_and_one_with_a_stale_e_tag_conflicts(
    storage: StateStorage,
) -> None:
    await storage.write({USER: {"v": 1}, CONVERSATION: {"v": 1}})
    read = await storage.read([USER, CONVERSATION])
    await storage.write({CONVERSATION: {**read[CONVERSATION], "v": 2}})  # changed since it was read

    with pytest.raises(ETagConflictError):
        await storage.write({CONVERSATION: Delete(read[CONVERSATION]["e_tag"])})
    await storage.write({USER: Delete(read[USER]["e_tag"])})

    assert set(await storage.read([USER, CONVERSATION])) == {CONVERSATION}
    await storage.write({USER: Delete(read[USER]["e_tag"])})  # already gone: fine
    await storage.write({CONVERSATION: Delete()})  # "*": whatever is there
    assert await storage.read([USER, CONVERSATION]) == {}


async def test_deletes_and_writes_in_one_call_follow_the_backends_atomicity(storage: StateStorage) -> None:
    await storage.write({USER: {"v": 1}, CONVERSATION: {"v": 1}})
    read = await storage.read([USER, CONVERSATION])
    await storage.write({USER: {**read[USER], "v": 2}})  # another turn got there first

    with pytest.raises(ETagConflictError):
        await storage.write({CONVERSATION: Delete(read[CONVERSATION]["e_tag"]), USER: Delete(read[USER]["e_tag"])})

    left = await storage.read([USER, CONVERSATION])
    if storage.atomic_writes:
        assert set(left) == {USER, CONVERSATION}  # nothing happened
    else:
        assert set(left) == {USER}  # in order: the conversation went, the user's conflict stopped the rest
    assert left[USER]["v"] == 2


async def test_a_delete_needs_a_stored_e_tag_or_a_star(storage: StateStorage) -> None:
    with pytest.raises(ValueError, match="e_tag"):
        await storage.write({USER: Delete("")})


# -- close -----------------------------------------------------------------------------------------------------


async def test_after_close_every_call_raises_a_storage_error_and_close_is_idempotent(storage: StateStorage) -> None:
    await storage.write({KEY: {"v": 1}})

    await storage.close()
    await storage.close()

    calls = {
        "read": lambda: storage.read([KEY]),
        "write": lambda: storage.write({KEY: {"v": 2, "e_tag": "*"}}),
        "delete": lambda: storage.delete([KEY]),
        "move_aside": lambda: storage.move_aside(KEY),
        "compact": storage.compact,
        "read_damaged": lambda: storage.read_damaged([KEY]),
        "remove_expired": storage.remove_expired,
    }
    for call in calls.values():
        with pytest.raises(StorageError, match="closed"):
            await call()


# -- expiry ----------------------------------------------------------------------------------------------------


@pytest.fixture
def clock(storage: StateStorage) -> Clock:
    """``storage`` with conversations expiring an hour after their last write and users never."""
    moved = Clock()
    storage.expiry = ExpiryPolicy(conversation_ttl=timedelta(hours=1), user_ttl=None, clock=moved)
    return moved


async def test_an_expired_conversation_reads_as_absent_and_a_new_one_can_be_created(
    storage: StateStorage, clock: Clock
) -> None:
    await storage.write({CONVERSATION: {"count": 5}, USER: {"name": "Ada"}})
    clock.advance(minutes=59)
    assert set(await storage.read([CONVERSATION, USER])) == {CONVERSATION, USER}

    clock.advance(minutes=2)

    stored = await storage.read([CONVERSATION, USER])
    assert set(stored) == {USER}  # users have no TTL here
    assert "$expiresAt" not in stored[USER]
    await storage.write({CONVERSATION: {"count": 1}})  # create-only, over the expired record
    assert (await storage.read([CONVERSATION]))[CONVERSATION]["count"] == 1


async def test_every_write_extends_the_life_of_a_record(storage: StateStorage, clock: Clock) -> None:
    item: dict[str, object] = {"count": 1}
    await storage.write({CONVERSATION: item})
    clock.advance(minutes=50)
    item["count"] = 2
    await storage.write({CONVERSATION: item})

    clock.advance(minutes=50)

    assert (await storage.read([CONVERSATION]))[CONVERSATION]["count"] == 2


async def test_a_stale_writer_cannot_revive_an_expired_record_someone_else_replaced(
    storage: StateStorage, clock: Clock
) -> None:
    await storage.write({CONVERSATION: {"v": "old"}})
    clock.advance(hours=2)
    await storage.write({CONVERSATION: {"v": "new turn"}})  # replaces the expired record

    with pytest.raises(ETagConflictError):
        await storage.write({CONVERSATION: {"v": "another create-only"}})
    assert (await storage.read([CONVERSATION]))[CONVERSATION]["v"] == "new turn"


async def test_a_read_reports_each_records_expiry_and_refresh_is_due_after_a_tenth_of_its_life(
    storage: StateStorage, clock: Clock
) -> None:
    await storage.write({CONVERSATION: {"count": 1}, USER: {"name": "Ada"}})
    stamps: dict[str, int] = {}

    await storage.read([CONVERSATION, USER], stamps=stamps)

    assert list(stamps) == [CONVERSATION]  # users have no TTL here
    assert not storage.refresh_due(CONVERSATION, stamps[CONVERSATION])
    assert not storage.refresh_due(USER, None)
    assert storage.refresh_due(CONVERSATION, None)  # written before its TTL was set
    clock.advance(minutes=5, seconds=59)
    assert not storage.refresh_due(CONVERSATION, stamps[CONVERSATION])
    clock.advance(seconds=1)
    assert storage.refresh_due(CONVERSATION, stamps[CONVERSATION])


async def test_remove_expired_deletes_in_bounded_batches_where_the_backend_can(
    storage: StateStorage, clock: Clock
) -> None:
    conversations = [f"emulator/conversations/c{i}" for i in range(3)]
    await storage.write({key: {"i": i} for i, key in enumerate(conversations)} | {USER: {"name": "Ada"}})
    assert await storage.remove_expired() == 0  # nothing has expired yet
    clock.advance(hours=2)

    removed = [await storage.remove_expired(limit=2), await storage.remove_expired(limit=2)]

    if storage.expiry_cleanup:
        assert removed == [2, 1]
        assert await storage._load_many(conversations) == {}  # gone from the store, not only hidden
    else:
        assert removed == [0, 0]
    assert set(await storage.read([*conversations, USER])) == {USER}
