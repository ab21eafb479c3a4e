"""The ``name`` command: ask for the name to use from now on and store it in the profile."""

from __future__ import annotations

from dataclasses import replace

from botbuilder.dialogs import ComponentDialog, DialogTurnResult, WaterfallDialog, WaterfallStepContext
from botbuilder.dialogs.prompts import PromptOptions

from data_models import UserProfile
from data_models.accessors import ModelProperty

from .names import NAME_MAX_LENGTH, NamePrompt
from .questions import plain_text, question

# Stable ids: saved dialog stacks refer to them.
NAME_DIALOG = "name"
# A changed list of steps needs a new id here, the old waterfall kept until it drains (see dialogs/__init__.py).
_STEPS = "name.steps"
_NAME_PROMPT = "name.prompt"

NEW_NAME_QUESTION = "What should I call you?"
#: The question when a name is stored already (``current``).
CHANGE_NAME_QUESTION = NEW_NAME_QUESTION + " (Now: {current}.)"
NEW_NAME_RETRY = f"A name needs 1 to {NAME_MAX_LENGTH} characters. {NEW_NAME_QUESTION}"
RENAMED_TEXT = "Thanks, {name}! I'll call you that from now on."


class NameDialog(ComponentDialog):
    def __init__(self, profile: ModelProperty[UserProfile]) -> None:
        super().__init__(NAME_DIALOG)
        self._profile = profile
        self.add_dialog(WaterfallDialog(_STEPS, [self._ask, self._store]))
        self.add_dialog(NamePrompt(_NAME_PROMPT))
        self.initial_dialog_id = _STEPS

    async def _ask(self, step: WaterfallStepContext) -> DialogTurnResult:
        current = (await self._profile.get(step.context)).name
        ask = question(CHANGE_NAME_QUESTION.format(current=current), plain=True) if current else None
        return await step.prompt(
            _NAME_PROMPT,
            PromptOptions(prompt=ask or question(NEW_NAME_QUESTION), retry_prompt=question(NEW_NAME_RETRY)),
        )

    async def _store(self, step: WaterfallStepContext) -> DialogTurnResult:
        name = step.result.strip()
        profile = await self._profile.get(step.context)
        await self._profile.set(step.context, replace(profile, name=name))
        await step.context.send_activity(plain_text(RENAMED_TEXT.format(name=name)))
        return await step.end_dialog()
