"""The profile dialog: transport, name, age (optional), picture (optional), summary, confirm.

Answers are collected in a draft kept in the waterfall's own values, which live on the dialog stack in the
member's PrivateConversationState. The stored ``UserProfile`` is written only by the final "yes": "no",
``cancel`` or a conversation that is simply abandoned leave it exactly as it was. Because the stack is saved
every turn, a restart in the middle of the dialog continues at the same step.
"""

from __future__ import annotations

from typing import Any

from botbuilder.dialogs import (
    ComponentDialog,
    DialogTurnResult,
    WaterfallDialog,
    WaterfallStepContext,
)
from botbuilder.dialogs.choices import Choice, FoundChoice, ListStyle
from botbuilder.dialogs.prompts import AttachmentPrompt, PromptOptions, PromptValidatorContext
from botbuilder.schema import Attachment

from data_models import Picture, UserProfile, picture_url_problem
from data_models.accessors import ModelProperty
from data_models.user_profile import MAX_PICTURE_NAME_CHARS, PICTURE_TYPES

from .names import NAME_MAX_LENGTH, NamePrompt, check_name, chosen_name
from .prompts import ExactChoicePrompt, WholeNumberPrompt, YesNoPrompt
from .questions import plain_text, question

# Stable ids: saved dialog stacks refer to them, so renaming one breaks conversations in flight.
PROFILE_DIALOG = "profile"
# A changed list of steps needs a new id here, the old waterfall kept until it drains (see dialogs/__init__.py).
_STEPS = "profile.steps"
_TRANSPORT_PROMPT = "profile.transport"
_NAME_PROMPT = "profile.name"
_WANTS_AGE_PROMPT = "profile.wants-age"
_AGE_PROMPT = "profile.age"
_PICTURE_PROMPT = "profile.picture"
_CONFIRM_PROMPT = "profile.confirm"

TRANSPORT_CHOICES = ("Car", "Bus", "Bicycle")
AGE_MIN, AGE_MAX = 1, 149
SKIP = "skip"
YES_NO = ("Yes", "No")
YES = frozenset({"yes", "y", "yeah", "yep", "yup", "sure", "ok", "okay", "yes please", "of course"})
NO = frozenset({"no", "n", "nope", "nah", "no thanks", "not now"})
_DRAFT = "draft"

# What the dialog asks and says, in the order it asks (fields in braces are filled in with str.format).
TRANSPORT_QUESTION = "How do you usually get around?"
TRANSPORT_RETRY = f"Please pick one of: {', '.join(TRANSPORT_CHOICES)}."
NAME_QUESTION = "What name should I store?"
#: The name question when a name is stored already (``current``).
KEEP_NAME_QUESTION = NAME_QUESTION + " (Type keep to stay {current}.)"
NAME_RETRY = f"A name needs 1 to {NAME_MAX_LENGTH} characters. {NAME_QUESTION}"
WANTS_AGE_QUESTION = "Would you like to tell me your age? (yes or no)"
WANTS_AGE_RETRY = "Please answer yes or no: would you like to tell me your age?"
AGE_QUESTION = "How old are you?"
AGE_RETRY = f"Please give your age as a whole number from {AGE_MIN} to {AGE_MAX}."
PICTURE_QUESTION = f"Send me a profile picture (JPEG or PNG), or type {SKIP}."
PICTURE_RETRY = f"That wasn't a JPEG or PNG picture. Send one, or type {SKIP}."
#: ``problem``: why the picture cannot be kept (``data_models.picture_url_problem``).
PICTURE_REFUSED_TEXT = f"I can't keep that picture: {{problem}}. Send another JPEG or PNG, or type {SKIP}."
SUMMARY_TEXT = "Here is what I've got:"
CONFIRM_QUESTION = "Shall I save this profile? (yes or no)"
CONFIRM_RETRY = "Please answer yes or no: shall I save this profile?"
SAVED_TEXT = "Saved. Type 'show' to see your profile any time."
DISCARDED_TEXT = "OK, I've discarded those answers; your profile is unchanged."


class ProfileDialog(ComponentDialog):
    def __init__(self, profile: ModelProperty[UserProfile]) -> None:
        super().__init__(PROFILE_DIALOG)
        self._profile = profile
        self.add_dialog(
            WaterfallDialog(
                _STEPS,
                [
                    self._ask_transport,
                    self._ask_name,
                    self._ask_wants_age,
                    self._ask_age,
                    self._ask_picture,
                    self._confirm,
                    self._finish,
                ],
            )
        )
        self.add_dialog(ExactChoicePrompt(_TRANSPORT_PROMPT))
        self.add_dialog(NamePrompt(_NAME_PROMPT))
        self.add_dialog(YesNoPrompt(_WANTS_AGE_PROMPT, YES, NO))
        self.add_dialog(WholeNumberPrompt(_AGE_PROMPT, _validate_age))
        self.add_dialog(AttachmentPrompt(_PICTURE_PROMPT, _validate_picture))
        self.add_dialog(YesNoPrompt(_CONFIRM_PROMPT, YES, NO))
        self.initial_dialog_id = _STEPS

    async def _ask_transport(self, step: WaterfallStepContext) -> DialogTurnResult:
        step.values[_DRAFT] = {}
        return await step.prompt(
            _TRANSPORT_PROMPT,
            PromptOptions(
                prompt=question(TRANSPORT_QUESTION),
                retry_prompt=question(TRANSPORT_RETRY),
                choices=[Choice(value) for value in TRANSPORT_CHOICES],
                style=ListStyle.suggested_action,
            ),
        )

    async def _ask_name(self, step: WaterfallStepContext) -> DialogTurnResult:
        found: FoundChoice = step.result
        _draft(step)["transport"] = found.value
        prompt = question(NAME_QUESTION)
        current = (await self._profile.get(step.context)).name
        if current:
            prompt = question(KEEP_NAME_QUESTION.format(current=current), suggestions=(current,), plain=True)
        return await step.prompt(_NAME_PROMPT, PromptOptions(prompt=prompt, retry_prompt=question(NAME_RETRY)))

    async def _ask_wants_age(self, step: WaterfallStepContext) -> DialogTurnResult:
        current = (await self._profile.get(step.context)).name
        _draft(step)["name"] = chosen_name(step.result, current)
        return await step.prompt(
            _WANTS_AGE_PROMPT,
            PromptOptions(
                prompt=question(WANTS_AGE_QUESTION, suggestions=YES_NO),
                retry_prompt=question(WANTS_AGE_RETRY, suggestions=YES_NO),
            ),
        )

    async def _ask_age(self, step: WaterfallStepContext) -> DialogTurnResult:
        if not step.result:
            return await step.next(None)
        return await step.prompt(
            _AGE_PROMPT,
            PromptOptions(
                prompt=question(AGE_QUESTION),
                retry_prompt=question(AGE_RETRY),
            ),
        )

    async def _ask_picture(self, step: WaterfallStepContext) -> DialogTurnResult:
        _draft(step)["age"] = int(step.result) if step.result is not None else None
        return await step.prompt(
            _PICTURE_PROMPT,
            PromptOptions(
                prompt=question(PICTURE_QUESTION),
                retry_prompt=question(PICTURE_RETRY),
            ),
        )

    async def _confirm(self, step: WaterfallStepContext) -> DialogTurnResult:
        picture = _first_picture(step.result)
        _draft(step)["picture"] = picture.to_dict() if picture else None
        draft = UserProfile.from_dict(_draft(step))
        await step.context.send_activity(plain_text(f"{SUMMARY_TEXT}\n\n{describe_profile(draft)}"))
        return await step.prompt(
            _CONFIRM_PROMPT,
            PromptOptions(
                prompt=question(CONFIRM_QUESTION, suggestions=YES_NO),
                retry_prompt=question(CONFIRM_RETRY, suggestions=YES_NO),
            ),
        )

    async def _finish(self, step: WaterfallStepContext) -> DialogTurnResult:
        if step.result:
            await self._profile.set(step.context, UserProfile.from_dict(_draft(step)))
            await step.context.send_activity(SAVED_TEXT)
        else:
            await step.context.send_activity(DISCARDED_TEXT)
        return await step.end_dialog()


def _draft(step: WaterfallStepContext) -> dict[str, Any]:
    """The answers so far. A stack saved by another version of the bot may hold none, or something else: then the
    draft starts empty (the summary shows what is missing) rather than the step failing on every message."""
    draft = step.values.get(_DRAFT)
    if not isinstance(draft, dict):
        draft = step.values[_DRAFT] = {}
    return draft


def describe_profile(profile: UserProfile) -> str:
    """The profile as a short readable list (shared by the summary and the ``show`` command)."""
    lines = [
        f"- Name: {profile.name or '(not given)'}",
        f"- Transport: {profile.transport or '(not given)'}",
        f"- Age: {profile.age if profile.age is not None else '(not given)'}",
        f"- Picture: {(profile.picture.name or 'yes') if profile.picture else '(none)'}",
    ]
    return "\n".join(lines)


def picture_attachment(picture: Picture) -> Attachment:
    return Attachment(content_type=picture.content_type, content_url=picture.url, name=picture.name)


def _first_picture(attachments: list[Attachment] | None) -> Picture | None:
    """The first attachment that is a picture the profile can keep (see ``picture_url_problem``)."""
    for attachment in attachments or []:
        url = attachment.content_url
        if attachment.content_type in PICTURE_TYPES and url and not picture_url_problem(attachment.content_type, url):
            name = attachment.name if attachment.name and check_name(attachment.name) is None else None
            return Picture(attachment.content_type, url, name[:MAX_PICTURE_NAME_CHARS] if name else None)
    return None


def _picture_problem(attachments: list[Attachment] | None) -> str | None:
    """Why the first picture attached cannot be kept, or None when there is none or it can."""
    for attachment in attachments or []:
        if attachment.content_type in PICTURE_TYPES and attachment.content_url:
            return picture_url_problem(attachment.content_type, attachment.content_url)
    return None


async def _validate_age(prompt: PromptValidatorContext) -> bool:
    if not prompt.recognized.succeeded:
        return False
    value = prompt.recognized.value
    return float(value).is_integer() and AGE_MIN <= value <= AGE_MAX


async def _validate_picture(prompt: PromptValidatorContext) -> bool:
    if prompt.recognized.succeeded and _first_picture(prompt.recognized.value):
        prompt.recognized.value = [a for a in prompt.recognized.value if a.content_type in PICTURE_TYPES]
        return True
    problem = _picture_problem(prompt.recognized.value) if prompt.recognized.succeeded else None
    if problem:  # the question again, with the reason (a validator that answers replaces the retry prompt)
        await prompt.context.send_activity(question(PICTURE_REFUSED_TEXT.format(problem=problem)))
        return False
    text = (prompt.context.activity.text or "").strip().lower()
    if text == SKIP:
        prompt.recognized.value = None
        return True
    return False
