"""The ``forget`` command: confirm, then erase everything stored about the user.

Deleting everything cannot be undone, so only one clear yes deletes: the whole answer must be one of
``CLEAR_YES`` ("yes", or the button's "Yes, forget me"), case and punctuation aside. A clear no keeps everything;
anything else ("not sure", "yes no", "ok", "y", "1") asks again, and after ``UNCLEAR_ANSWERS`` unclear answers
the bot takes it as a no. Nothing but a clear yes ever deletes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from botbuilder.core import TurnContext
from botbuilder.dialogs import ComponentDialog, DialogTurnResult, WaterfallDialog, WaterfallStepContext
from botbuilder.dialogs.prompts import PromptOptions, PromptValidatorContext

from .prompts import YesNoPrompt
from .questions import question

FORGET_DIALOG = "forget"
# A changed list of steps needs a new id here, the old waterfall kept until it drains (see dialogs/__init__.py).
_STEPS = "forget.steps"
_CONFIRM_PROMPT = "forget.confirm"

YES_BUTTON = "Yes, forget me"
NO_BUTTON = "No, keep it"
CLEAR_YES = frozenset({"yes", "yes forget me", "yes please forget me", "yes delete everything"})
CLEAR_NO = frozenset(
    {"no", "n", "nope", "no thanks", "no keep it", "keep", "keep it", "keep everything", "dont", "do not"}
)
#: Unclear answers after which the question ends as a no.
UNCLEAR_ANSWERS = 3
FORGET_QUESTION = (
    "This deletes your name, your profile and what I keep about you in every conversation with me. "
    "Are you sure? (yes or no)"
)
FORGET_RETRY = "Please answer yes or no: shall I forget everything about you? Only a clear yes deletes."
#: ``removed``: what was deleted, in words (``bots.user_data.Forgotten``).
FORGOTTEN_TEXT = "Done: I've forgotten everything I knew about you ({removed})."
KEPT_TEXT = "OK, I haven't deleted anything."
UNCLEAR_TEXT = "I'll take that as a no: I haven't deleted anything. Type 'forget' again if you do want it."

# Erases and returns what it removed, in words ("your profile and your state in 2 conversations").
Eraser = Callable[[TurnContext], Awaitable[object]]


async def _clear_answer_or_give_up(prompt: PromptValidatorContext) -> bool:
    """A clear yes or no ends the question; the ``UNCLEAR_ANSWERS``-th unclear one ends it as "unclear"."""
    if prompt.recognized.succeeded:
        return True
    if prompt.options.number_of_attempts + 1 >= UNCLEAR_ANSWERS:
        prompt.recognized.value = None
        return True
    return False


class ForgetDialog(ComponentDialog):
    def __init__(self, erase: Eraser) -> None:
        """``erase`` deletes the user's stored state; it runs only after a clear "yes"."""
        super().__init__(FORGET_DIALOG)
        self._erase = erase
        self.add_dialog(WaterfallDialog(_STEPS, [self._confirm, self._finish]))
        self.add_dialog(YesNoPrompt(_CONFIRM_PROMPT, CLEAR_YES, CLEAR_NO, _clear_answer_or_give_up))
        self.initial_dialog_id = _STEPS

    async def _confirm(self, step: WaterfallStepContext) -> DialogTurnResult:
        return await step.prompt(
            _CONFIRM_PROMPT,
            PromptOptions(
                prompt=question(FORGET_QUESTION, suggestions=(YES_BUTTON, NO_BUTTON)),
                retry_prompt=question(FORGET_RETRY, suggestions=(YES_BUTTON, NO_BUTTON)),
            ),
        )

    async def _finish(self, step: WaterfallStepContext) -> DialogTurnResult:
        if step.result is not True:
            await step.context.send_activity(KEPT_TEXT if step.result is False else UNCLEAR_TEXT)
            return await step.end_dialog()
        # Ending the dialog first keeps the stack tidy; the erase then drops this conversation's state entirely.
        result = await step.end_dialog()
        removed = await self._erase(step.context)
        await step.context.send_activity(FORGOTTEN_TEXT.format(removed=removed))
        return result
