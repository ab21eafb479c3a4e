"""Whether a saved dialog stack can be resumed by the dialogs this code registers, checked before it is run.

A stack is data from the past: a rollback to an older version of the bot leaves dialog ids this version does not
register, a changed waterfall leaves a step index past its steps, and a damaged record leaves frames without the
state the SDK reads. Run as is, such a stack raises inside botbuilder-dialogs on every message of the
conversation, and cancelling it raises too (``end_dialog`` reads the same state). ``unresumable`` walks the stack
against a ``DialogSet`` and says why it cannot be resumed, so that the caller can drop it instead.

What is checked is what botbuilder-dialogs 4.17.1 reads when it continues, re-prompts, resumes or cancels a frame
(tests/hosting/test_sdk_edges.py pins the names): every frame's id is registered where the SDK looks it up, and

* ``WaterfallDialog``: ``stepIndex`` is an int naming one of its steps, ``values`` is a dict, ``options`` and
  ``instanceId`` are there;
* ``Prompt`` (text, number, choice, confirm, attachment ...): ``options`` is a ``PromptOptions`` and ``state`` a
  dict; ``ActivityPrompt`` also counts attempts in that dict (``AttemptCount``, an int);
* ``ComponentDialog``: ``dialogs`` is a ``DialogState`` whose stack is resumable by the component's own dialogs.

Other kinds of dialog are only looked up by id: what they keep in their state is their own business.
"""

from __future__ import annotations

from typing import Any

from botbuilder.dialogs import ComponentDialog, Dialog, DialogInstance, DialogSet, DialogState, WaterfallDialog
from botbuilder.dialogs.prompts import ActivityPrompt, Prompt, PromptOptions


def unresumable(dialogs: DialogSet, state: object) -> str | None:
    """Why the saved dialog state ``state`` cannot be resumed with ``dialogs``; None when every frame of it can be.

    ``state`` is the value of the set's state property as ``DialogSet.create_context`` gets it (an empty
    ``DialogState`` when there was none): anything but a ``DialogState``, a stored null included, is unresumable.
    Pure: it reads, and changes nothing.
    """
    if not isinstance(state, DialogState):
        return f"the saved dialog state is a {type(state).__name__}, not a DialogState"
    return _stack_problem(dialogs, state, "")


def _stack_problem(dialogs: DialogSet, state: DialogState, where: str) -> str | None:
    stack = state.dialog_stack
    if not isinstance(stack, list):
        return f"the dialog stack{where} is a {type(stack).__name__}, not a list"
    for frame in stack:
        problem = _frame_problem(dialogs, frame, where)
        if problem is not None:
            return problem
    return None


def _frame_problem(dialogs: DialogSet, frame: object, where: str) -> str | None:
    if not isinstance(frame, DialogInstance):
        return f"a frame of the dialog stack{where} is a {type(frame).__name__}, not a DialogInstance"
    if not isinstance(frame.id, str) or not frame.id:
        return f"a frame of the dialog stack{where} has no dialog id"
    dialog = dialogs.find_dialog(frame.id)
    if dialog is None:
        return f"no dialog {frame.id!r} is registered{where}"
    if not isinstance(frame.state, dict):
        return f"dialog {frame.id!r}{where} has a {type(frame.state).__name__} as its state, not a dict"
    problem = _state_problem(dialog, frame.state)
    return None if problem is None else f"dialog {frame.id!r}{where}: {problem}"


def _state_problem(dialog: Dialog, state: dict[str, Any]) -> str | None:
    if isinstance(dialog, WaterfallDialog):
        return _waterfall_problem(dialog, state)
    if isinstance(dialog, (Prompt, ActivityPrompt)):
        return _prompt_problem(dialog, state)
    if isinstance(dialog, ComponentDialog):
        inner = state.get(ComponentDialog.persisted_dialog_state)
        if not isinstance(inner, DialogState):
            return f"its {ComponentDialog.persisted_dialog_state!r} is not a DialogState"
        return _stack_problem(dialog._dialogs, inner, f" inside {dialog.id!r}")
    return None


def _waterfall_problem(dialog: WaterfallDialog, state: dict[str, Any]) -> str | None:
    index = state.get(WaterfallDialog.StepIndex)
    steps = len(dialog._steps)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < steps:
        return f"its {WaterfallDialog.StepIndex!r} is {index!r}, not a step of its {steps}"
    if not isinstance(state.get(WaterfallDialog.PersistedValues), dict):
        return f"its {WaterfallDialog.PersistedValues!r} is not a dict"
    for key in (WaterfallDialog.PersistedOptions, WaterfallDialog.PersistedInstanceId):
        if key not in state:
            return f"it has no {key!r}"
    return None


def _prompt_problem(dialog: Prompt | ActivityPrompt, state: dict[str, Any]) -> str | None:
    if not isinstance(state.get(dialog.persisted_options), PromptOptions):
        return f"its {dialog.persisted_options!r} is not a PromptOptions"
    prompt_state = state.get(dialog.persisted_state)
    if not isinstance(prompt_state, dict):
        return f"its {dialog.persisted_state!r} is not a dict"
    if isinstance(dialog, ActivityPrompt):
        attempts = prompt_state.get(Prompt.ATTEMPT_COUNT_KEY)
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            return f"its attempt count is {attempts!r}, not an int"
    return None
