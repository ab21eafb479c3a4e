"""The places where our code leans on botbuilder's internals, pinned so that an SDK upgrade fails here first.

hosting/pipeline.py fills BotState's per-turn cache itself (one storage read for every state) and detects changes
with its own CachedBotState subclass; hosting/storage/codec.py encodes the dialog objects the SDK keeps in state;
hosting/dialog_stack.py checks a saved stack against what the SDK's dialogs read of it. All were written for
botbuilder 4.17.1 and msrest 0.7.1. If one of these tests fails after an upgrade, re-read the
SDK code it names before changing the test.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

from botbuilder.core import BotState, ConversationState, PrivateConversationState, TurnContext, UserState
from botbuilder.core.bot_state import CachedBotState
from botbuilder.dialogs import ComponentDialog, DialogSet, WaterfallDialog
from botbuilder.dialogs.prompts import Prompt
from botbuilder.schema import Activity, ChannelAccount, ConversationAccount

from hosting import states
from hosting.states import _cache_key
from hosting.storage import MemoryStateStorage

WRITTEN_FOR = {"botbuilder-core": "4.17.1", "botbuilder-dialogs": "4.17.1", "msrest": "0.7.1"}


def test_the_sdk_is_the_version_our_edges_were_written_for() -> None:
    assert {name: version(name) for name in WRITTEN_FOR} == WRITTEN_FOR


def test_bot_state_keeps_its_turn_cache_where_the_pipeline_puts_it() -> None:
    """``BotState.get_cached_state`` must read the key the pipeline writes (``_context_service_key``)."""
    storage = MemoryStateStorage()
    context = TurnContext(
        object(),  # no adapter is needed to hold turn state
        Activity(
            channel_id="test",
            conversation=ConversationAccount(id="c"),
            from_property=ChannelAccount(id="u"),
        ),
    )
    for state in (
        states.UserState(storage),
        states.ConversationState(storage),
        states.PrivateConversationState(storage),
    ):
        cached = CachedBotState({"x": 1})
        context.turn_state[_cache_key(state)] = cached
        assert state.get_cached_state(context) is cached


def test_the_sdk_load_still_rereads_an_empty_cached_record() -> None:
    """Why ``hosting.states`` overrides ``load``: if the SDK stops re-reading empty records, the override can go."""
    source = inspect.getsource(BotState.load)
    assert "not cached_state.state" in source


def test_cached_bot_state_still_decides_changes_by_its_hash() -> None:
    assert isinstance(inspect.getattr_static(CachedBotState, "is_changed"), property)
    assert "compute_hash" in inspect.getsource(CachedBotState.is_changed.fget)


def test_the_three_states_keep_their_storage_keys() -> None:
    """Stored records are found by these keys: a change would orphan every saved user and conversation."""
    context = TurnContext(
        object(),
        Activity(channel_id="ch", conversation=ConversationAccount(id="c"), from_property=ChannelAccount(id="u")),
    )
    storage = MemoryStateStorage()
    assert UserState(storage).get_storage_key(context) == "ch/users/u"
    assert ConversationState(storage).get_storage_key(context) == "ch/conversations/c"
    assert PrivateConversationState(storage).get_storage_key(context) == "ch/conversations/c/users/u/"


def test_waterfalls_and_components_keep_their_dialogs_where_the_stack_check_looks() -> None:
    """hosting/dialog_stack.py counts a waterfall's ``_steps`` and looks inner ids up in a component's ``_dialogs``."""

    async def step(_: object) -> None:
        return None

    waterfall = WaterfallDialog("steps", [step])
    component = ComponentDialog("component")
    component.add_dialog(waterfall)

    assert waterfall._steps == [step]
    assert isinstance(component._dialogs, DialogSet)
    assert component._dialogs.find_dialog("steps") is waterfall


def test_the_sdk_still_reads_the_frame_state_the_stack_check_validates() -> None:
    """If these reads move or change, re-read the SDK and hosting/dialog_stack.py together."""
    assert "state[self.StepIndex] + 1" in inspect.getsource(WaterfallDialog.resume_dialog)
    assert "self._steps[index]" in inspect.getsource(WaterfallDialog.get_step_name)
    assert "instance.state[self.persisted_options]" in inspect.getsource(Prompt.continue_dialog)
    assert "instance.state[self.persisted_dialog_state]" in inspect.getsource(ComponentDialog.reprompt_dialog)
