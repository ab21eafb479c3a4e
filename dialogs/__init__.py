"""Dialogs, their stable ids, and the rules they share with the bot."""

from .forget_dialog import FORGET_DIALOG, ForgetDialog
from .name_dialog import NAME_DIALOG, NameDialog
from .names import GREET_BACK, NAME_MAX_LENGTH, check_name, is_greeting
from .profile_dialog import PROFILE_DIALOG, ProfileDialog, describe_profile, picture_attachment
from .questions import question

__all__ = [
    "FORGET_DIALOG",
    "GREET_BACK",
    "NAME_DIALOG",
    "NAME_MAX_LENGTH",
    "PROFILE_DIALOG",
    "ForgetDialog",
    "NameDialog",
    "ProfileDialog",
    "check_name",
    "describe_profile",
    "is_greeting",
    "picture_attachment",
    "question",
]
