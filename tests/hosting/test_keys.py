"""The key escaping shared by the blob, table and Cosmos backends (hosting/storage/keys.py). Pure functions, no I/O."""

from __future__ import annotations

import hashlib
import random

import pytest

from hosting.storage.keys import (
    BLOB_NAME_MAX_SEGMENTS,
    BLOB_NAME_MAX_UNITS,
    COSMOS_ID_MAX_UNITS,
    TABLE_KEY_MAX_UNITS,
    escape_blob_name,
    escape_cosmos_key,
    escape_table_key,
)

ESCAPERS = {"table": escape_table_key, "cosmos": escape_cosmos_key, "blob": escape_blob_name}
LIMITS = {"table": TABLE_KEY_MAX_UNITS, "cosmos": COSMOS_ID_MAX_UNITS, "blob": BLOB_NAME_MAX_UNITS}
CONTROL_CHARACTERS = [chr(code) for code in [*range(0x00, 0x20), *range(0x7F, 0xA0)]]


def utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def sha(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_shortened(name: str) -> bool:
    """Whether ``name`` ends with ``*h`` and a sha256 in hex: a key cut to fit a length limit."""
    return name[-(64 + 2) : -64] == "*h"


def unescape(name: str) -> str:
    """The key an unshortened name was escaped from, read back by the scheme's rule (every ``*`` starts a
    ``*`` + two lowercase hex digits escape): that it gives the key back shows escaping loses nothing. Strict, so
    a ``*`` escaping never writes fails the test."""
    chars: list[str] = []
    index = 0
    while index < len(name):
        if name[index] == "*":
            digits = name[index + 1 : index + 3]
            assert len(digits) == 2, f"{name!r}: a cut escape at {index}"
            assert set(digits) <= set("0123456789abcdef"), f"{name!r}: an invalid escape at {index}"
            chars.append(chr(int(digits, 16)))
            index += 3
        else:
            chars.append(name[index])
            index += 1
    return "".join(chars)


AWKWARD_KEYS = [
    "emulator/users/user-1",
    "msteams/conversations/19:abc@thread.tacv2;messageid=1",
    "webchat/conversations/a/b\\c?d#e",
    "emulator/users/ünïcødé 名前 🤖",
    "slack/users/%2F..%2Fescape",
    "a*2fb",
    "a/b",
    "*",
    "**2f",
    "/",
    "//",
    "a//b",
    "/leading",
    "trailing/",
    ".",
    "..",
    "a/../b",
    "a/./b",
    "ends.with.dot.",
    "it's 100%",
    "tab\tnewline\ncr\rnul\x00del\x7fc1\x9f",
    "*h" + "0" * 64,
    "x" * 2000,
    "🤖" * 600,
    "/".join(["s"] * 400),
]


@pytest.mark.parametrize(
    ("key", "table", "cosmos", "blob"),
    [
        # Ordinary bot keys: "/" escaped as "*2f" where it is forbidden (JS/.NET CosmosDbKeyEscape's ids), kept as a
        # path in blob names (Python botbuilder-azure's blob names).
        ("emulator/users/user-1", "emulator*2fusers*2fuser-1", "emulator*2fusers*2fuser-1", "emulator/users/user-1"),
        ("msteams/conversations/19:x@thread.v2", "msteams*2fconversations*2f19:x@thread.v2", None, None),
        ("a\\b?c#d", "a*5cb*3fc*23d", "a*5cb*3fc*23d", "a*5cb*3fc*23d"),
        ("star*", "star*2a", "star*2a", "star*2a"),
        ("tab\tlf\ncr\r", "tab*09lf*0acr*0d", "tab*09lf*0acr*0d", "tab*09lf*0acr*0d"),
        ("\x00\x1f\x7f\x9f", "*00*1f*7f*9f", "*00*1f*7f*9f", "*00*1f*7f*9f"),
        ("\xa0é名🤖", "\xa0é名🤖", "\xa0é名🤖", "\xa0é名🤖"),
        # Only table keys escape % and ' (they break point operations on some service/emulator versions).
        ("it's 100%", "it*27s 100*25", "it's 100%", "it's 100%"),
        # Blob names: no empty segments, no segment ending with a dot, no trailing slash.
        ("a//b", "a*2f*2fb", "a*2f*2fb", "a*2f*2fb"),
        ("/a", "*2fa", "*2fa", "*2fa"),
        ("a/", "a*2f", "a*2f", "a*2f"),
        ("a./b.", "a.*2fb.", "a.*2fb.", "a*2e/b*2e"),
        ("a/../b", "a*2f..*2fb", "a*2f..*2fb", "a/.*2e/b"),
        # A Cosmos id of only dots would be a path step in its URL.
        ("..", "..", ".*2e", ".*2e"),
    ],
)
def test_escaping_table(key: str, table: str, cosmos: str | None, blob: str | None) -> None:
    assert escape_table_key(key) == table
    assert escape_cosmos_key(key) == (cosmos if cosmos is not None else table)
    assert escape_blob_name(key) == (blob if blob is not None else key)


@pytest.mark.parametrize("target", sorted(ESCAPERS))
@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=range(len(AWKWARD_KEYS)))
def test_names_fit_the_limits_and_unescape_to_the_key_unless_shortened(target: str, key: str) -> None:
    name = ESCAPERS[target](key)

    assert utf16_units(name) <= LIMITS[target]
    if is_shortened(name):
        assert name.endswith("*h" + sha(key))
    else:
        assert unescape(name) == key


@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=range(len(AWKWARD_KEYS)))
def test_table_and_cosmos_names_hold_no_forbidden_character(key: str) -> None:
    for name in (escape_table_key(key), escape_cosmos_key(key)):
        assert not set(name) & {"/", "\\", "?", "#", *CONTROL_CHARACTERS}
    assert not set(escape_table_key(key)) & {"%", "'"}


@pytest.mark.parametrize("key", AWKWARD_KEYS, ids=range(len(AWKWARD_KEYS)))
def test_blob_names_are_valid_paths(key: str) -> None:
    name = escape_blob_name(key)
    segments = name.split("/")

    assert not set(name) & {"\\", "?", "#", *CONTROL_CHARACTERS}
    assert len(segments) <= BLOB_NAME_MAX_SEGMENTS
    assert all(segments), f"empty segment in {name!r}"
    assert not any(segment.endswith(".") for segment in segments)
    assert not name.endswith(("/", "."))


def test_keys_longer_than_the_limit_are_cut_and_end_with_a_hash_of_the_full_key() -> None:
    key = "directline/conversations/" + "x" * 3000
    twin = key + "y"

    for target, escape in ESCAPERS.items():
        name = escape(key)
        assert is_shortened(name)
        assert utf16_units(name) == LIMITS[target]
        assert name.endswith("*h" + sha(key))
        assert escape(key) == name, "shortening must be deterministic"
        assert escape(twin) != name


def test_a_cut_never_leaves_half_an_escape_before_the_hash() -> None:
    for padding in range(0, 4):
        key = "p" * (COSMOS_ID_MAX_UNITS - 66 - padding) + "/" * 100
        name = escape_cosmos_key(key)
        prefix = name[: -(64 + 2)]
        assert prefix[-1] != "*"
        assert prefix[-2] != "*"
        assert utf16_units(name) <= COSMOS_ID_MAX_UNITS


def test_characters_outside_the_bmp_count_twice_and_are_never_split() -> None:
    key = "🤖" * 300  # 600 UTF-16 units, more than a table key holds
    name = escape_table_key(key)

    assert is_shortened(name)
    assert utf16_units(name) <= TABLE_KEY_MAX_UNITS
    assert name[: -(64 + 2)] == "🤖" * ((TABLE_KEY_MAX_UNITS - 66) // 2)


def test_a_key_that_imitates_a_shortened_name_does_not_collide_with_it() -> None:
    # botbuilder-azure's truncation ("prefix + sha256") lets a key of exactly that text take the same id;
    # "*h" cannot come out of escaping, so here the imitation escapes to something else.
    long_key = "k" * 3000
    for escape in ESCAPERS.values():
        shortened = escape(long_key)
        assert escape(shortened) != shortened


def test_no_two_of_many_keys_share_a_name() -> None:
    rng = random.Random(20261125)
    alphabet = "ab/\\?#*%'.:-_ \t\x00\x7fé🤖"
    keys = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))) for _ in range(20000)}
    keys |= set(AWKWARD_KEYS)
    keys |= {"x" * n for n in range(200, 1300, 7)}

    for target, escape in ESCAPERS.items():
        names = {escape(key) for key in keys}
        assert len(names) == len(keys), f"two keys share a {target} name"


@pytest.mark.parametrize("key", ["", "lone \ud800 surrogate"])
@pytest.mark.parametrize("target", sorted(ESCAPERS))
def test_keys_that_are_not_text_are_refused(target: str, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        ESCAPERS[target](key)
