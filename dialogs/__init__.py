"""Dialogs, their stable ids, and the rules they share with the bot."""

from .forget_dialog import FORGET_DIALOG, ForgetDialog
from .names import NAME_MAX_LENGTH, check_name
from .profile_dialog import PROFILE_DIALOG, ProfileDialog, describe_profile, picture_attachment

__all__ = [
    "FORGET_DIALOG",
    "NAME_MAX_LENGTH",
    "PROFILE_DIALOG",
    "ForgetDialog",
    "ProfileDialog",
    "check_name",
    "describe_profile",
    "picture_attachment",
]
