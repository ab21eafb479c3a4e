"""Dialogs, their stable ids, and the rules they share with the bot.

The rule for changing a dialog: a saved dialog stack names each waterfall by its id and stores the index of the
step it waits in (and the prompt's options). Changing a waterfall's steps (adding, removing or reordering one)
under the same id would move every conversation in the middle of it to the wrong step after a deploy. So a
changed waterfall gets a NEW id (``profile.steps`` -> ``profile.steps.v2``), the component starts new
conversations in the new one, and the old waterfall stays registered under its old id until the conversations in
it have drained (at most ``CONVERSATION_TTL`` after the deploy). tests/bot/test_schema_rules.py records each
waterfall's step names per id and fails when they change without a new id.
"""

from .forget_dialog import FORGET_DIALOG, ForgetDialog
from .name_dialog import NAME_DIALOG, NameDialog
from .names import GREET_BACK, NAME_MAX_LENGTH, REFUSED_NAME_TEXT, check_name, is_greeting
from .profile_dialog import PROFILE_DIALOG, ProfileDialog, describe_profile, picture_attachment
from .questions import plain_text, question

__all__ = [
    "FORGET_DIALOG",
    "GREET_BACK",
    "NAME_DIALOG",
    "NAME_MAX_LENGTH",
    "PROFILE_DIALOG",
    "REFUSED_NAME_TEXT",
    "ForgetDialog",
    "NameDialog",
    "ProfileDialog",
    "check_name",
    "describe_profile",
    "is_greeting",
    "picture_attachment",
    "plain_text",
    "question",
]
