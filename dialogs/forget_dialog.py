"""The ``forget`` command: confirm, then erase everything stored about the user."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from botbuilder.core import TurnContext
from botbuilder.dialogs import ComponentDialog, DialogTurnResult, WaterfallDialog, WaterfallStepContext
from botbuilder.dialogs.prompts import ConfirmPrompt, PromptOptions

from .questions import question

FORGET_DIALOG = "forget"
# A changed list of steps needs a new id here, the old waterfall kept until it drains (see dialogs/__init__.py).
_STEPS = "forget.steps"
_CONFIRM_PROMPT = "forget.confirm"

# Erases and returns what it removed, in words ("your profile and your state in 2 conversations").
Eraser = Callable[[TurnContext], Awaitable[object]]


class ForgetDialog(ComponentDialog):
    def __init__(self, erase: Eraser) -> None:
        """``erase`` deletes the user's stored state; it runs only after an explicit "yes"."""
        super().__init__(FORGET_DIALOG)
        self._erase = erase
        self.add_dialog(WaterfallDialog(_STEPS, [self._confirm, self._finish]))
        self.add_dialog(ConfirmPrompt(_CONFIRM_PROMPT, default_locale="en-us"))
        self.initial_dialog_id = _STEPS

    async def _confirm(self, step: WaterfallStepContext) -> DialogTurnResult:
        return await step.prompt(
            _CONFIRM_PROMPT,
            PromptOptions(
                prompt=question(
                    "This deletes your name, your profile and what I keep about you in every conversation with me. "
                    "Are you sure? (yes or no)"
                ),
                retry_prompt=question("Please answer yes or no: shall I forget everything about you?"),
            ),
        )

    async def _finish(self, step: WaterfallStepContext) -> DialogTurnResult:
        if not step.result:
            await step.context.send_activity("OK, I haven't deleted anything.")
            return await step.end_dialog()
        # Ending the dialog first keeps the stack tidy; the erase then drops this conversation's state entirely.
        result = await step.end_dialog()
        removed = await self._erase(step.context)
        await step.context.send_activity(f"Done: I've forgotten everything I knew about you ({removed}).")
        return result
