"""The rules that keep stored records readable across deploys: schema versions, migrations, dialog ids, codec.

* A record newer than the code is never rewritten down: the turn is refused with an apology and saves nothing.
* Older records are upgraded by explicit, separately tested steps (``data_models.migrations``).
* A changed waterfall gets a new dialog id (``dialogs/__init__.py``); ``WATERFALLS`` records the steps per id.
* The codec stores every field of the SDK's ``PromptOptions``.
"""

from __future__ import annotations

import pytest
from botbuilder.dialogs import ComponentDialog, Dialog, WaterfallDialog
from botbuilder.dialogs.prompts import PromptOptions

from bots import create_bot
from bots.state_bot import NEWER_RECORD_TEXT
from data_models import UserProfile
from data_models.conversation_data import SCHEMA_VERSION as MEMBER_VERSION
from data_models.migrations import MIGRATIONS, upgrade, v0_to_v1
from data_models.user_profile import SCHEMA_VERSION as PROFILE_VERSION
from hosting.storage import MemoryStateStorage, StateStorage, codec
from tests.support import words
from tests.support.harness import BotHarness

# --- a record newer than the code --------------------------------------------------------------------------------

#: A profile a newer version of the bot wrote: a version above this code's, with fields this code does not know.
NEWER_PROFILE = {
    "schema_version": PROFILE_VERSION + 1,
    "name": "Ada",
    "transport": "Bus",
    "age": 36,
    "picture": None,
    "pronouns": "she/her",
    "languages": ["en", "fr"],
}


def _without_e_tag(record: dict | None) -> dict | None:
    return None if record is None else {key: value for key, value in record.items() if key != "e_tag"}


async def test_a_newer_user_record_survives_a_turn_of_this_older_code_intact(storage: StateStorage) -> None:
    """The rollback case: a newer deploy wrote its version (extra fields); this code must not write it back as its
    own older version."""
    user = BotHarness(storage)
    await storage.write({user.user_key: {"UserProfile": NEWER_PROFILE, "future_property": {"x": 1}}})
    before = _without_e_tag(await user.stored(user.user_key))

    for text in ("hi", "profile", "name", "forget", "yes"):
        assert await user.say(text) == NEWER_RECORD_TEXT

    assert _without_e_tag(await user.stored(user.user_key)) == before
    assert await user.stored(user.conversation_key) is None, "a refused turn saves nothing at all"
    assert await user.stored(user.member_key) is None


async def test_a_newer_member_record_refuses_the_turn_and_is_kept() -> None:
    user = BotHarness(MemoryStateStorage())
    await user.say_all("hi", "Ada")
    record = {"MemberData": {"schema_version": MEMBER_VERSION + 1, "asked_for_name": False, "mood": "happy"}}
    await user.storage.write({user.member_key: {**record, "e_tag": "*"}})

    assert await user.say("ping") == NEWER_RECORD_TEXT

    assert _without_e_tag(await user.stored(user.member_key)) == record
    words.expect_echo(await user.elsewhere("conv-2").say("ping"), "ping", "Ada")  # other conversations go on


async def test_records_at_the_current_version_are_served_as_usual() -> None:
    user = BotHarness(MemoryStateStorage())
    await user.storage.write({user.user_key: {"UserProfile": {"schema_version": PROFILE_VERSION, "name": "Ada"}}})

    words.expect_echo(await user.say("ping"), "ping", "Ada")


# --- migrations ----------------------------------------------------------------------------------------------------


def test_every_version_below_the_current_one_has_a_migration_step() -> None:
    assert sorted(MIGRATIONS) == list(range(PROFILE_VERSION))


def test_v0_to_v1_keeps_the_name_and_adds_the_new_fields() -> None:
    """Version 0 of this bot stored only the name, with no schema_version."""
    assert v0_to_v1({"name": "Ada"}) == {
        "schema_version": 1,
        "name": "Ada",
        "transport": None,
        "age": None,
        "picture": None,
    }


def test_a_v0_record_reads_as_a_current_profile() -> None:
    """Through every step: version 0 up to this code's ``SCHEMA_VERSION``."""
    assert UserProfile.from_dict({"name": "Ada"}) == UserProfile(name="Ada")
    upgraded = upgrade({"name": "Ada"}, PROFILE_VERSION)
    assert upgraded["schema_version"] == PROFILE_VERSION
    assert upgraded == UserProfile(name="Ada").to_dict(), "every field this version has, and no other"


def test_upgrade_never_goes_down_and_never_skips_a_missing_step() -> None:
    with pytest.raises(ValueError, match="newer"):
        upgrade({"schema_version": PROFILE_VERSION + 1, "name": "Ada"}, PROFILE_VERSION)
    with pytest.raises(ValueError, match=f"no migration from schema version {PROFILE_VERSION}$"):
        upgrade({"schema_version": PROFILE_VERSION}, PROFILE_VERSION + 2)


# --- dialogs: a changed waterfall gets a new id ----------------------------------------------------------------

# Each waterfall's steps, by dialog id, as conversations in flight have them saved. Changing a list here is wrong:
# give the changed waterfall a new id, record it as a new entry, and keep the old one (its dialog registered)
# until its conversations have drained. See dialogs/__init__.py.
WATERFALLS = {
    "profile.steps": (
        "_ask_transport",
        "_ask_name",
        "_ask_wants_age",
        "_ask_age",
        "_ask_picture",
        "_confirm",
        "_finish",
    ),
    "forget.steps": ("_confirm", "_finish"),
    "name.steps": ("_ask", "_store"),
}
RULE = (
    "The steps of waterfall {id!r} changed. Saved conversations store the index of the step they wait in, so after "
    "a deploy they would continue at the wrong step. Give the changed waterfall a NEW dialog id, keep the old one "
    "registered until its conversations have drained, and record the new id in WATERFALLS (dialogs/__init__.py)."
)


def _waterfalls(dialog: Dialog) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    if isinstance(dialog, WaterfallDialog):
        found[dialog.id] = tuple(step.__name__ for step in dialog._steps)
    if isinstance(dialog, ComponentDialog):
        for inner in dialog._dialogs._dialogs.values():
            found |= _waterfalls(inner)
    return found


def test_each_waterfall_keeps_the_steps_recorded_for_its_id() -> None:
    bot, _ = create_bot(MemoryStateStorage())
    found: dict[str, tuple[str, ...]] = {}
    for dialog in bot._dialogs._dialogs.values():
        found |= _waterfalls(dialog)

    for dialog_id, steps in found.items():
        assert dialog_id in WATERFALLS, f"waterfall {dialog_id!r} is new: record its steps in WATERFALLS"
        assert steps == WATERFALLS[dialog_id], RULE.format(id=dialog_id)
    missing = set(WATERFALLS) - set(found)
    assert not missing, f"waterfalls {sorted(missing)} vanished: keep them registered until their conversations drain"


# --- the codec and the SDK's PromptOptions --------------------------------------------------------------------


def test_the_codec_stores_every_field_promptoptions_has() -> None:
    """Fails when a botbuilder-dialogs upgrade gives PromptOptions a field the codec would drop."""
    assert set(vars(PromptOptions())) == set(codec.PROMPT_OPTIONS_FIELDS)


def test_prompt_options_round_trip_through_the_codec() -> None:
    options = PromptOptions(validations={"min": 1}, number_of_attempts=2)

    [back] = codec.loads(codec.dumps({"x": [options]}))["x"]

    assert vars(back) == vars(options)
