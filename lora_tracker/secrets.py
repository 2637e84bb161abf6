"""Secrets never stored: one masking function for every configuration captured.

A training's configuration is shared with everyone who reads the database, so before a
configuration (the Python API's ``config``, the kohya hook's command line and TOML files,
transformers' ``TrainingArguments``, a trainer's config file, checkpoint metadata) is stored
or spooled, ``mask_secrets`` replaces

- the value of a key that names a secret (``hub_token``, ``password``, ``api_key``,
  ``client_secret``, ``auth``, ``credentials``, ...) with ``***``; a number, a boolean or
  ``None`` under such a key is no secret and stays (``use_auth_token=True``,
  ``max_token_length=225``);
- the value after a command-line flag that names a secret (``--hub_token hf_x`` or
  ``--hub_token=hf_x``) in a list of strings, or in a command line written as one string
  (the kohya_ss GUI's ``additional_parameters``);
- the password of a URL with credentials (``https://user:pw@host/``) in any string.

The events carry the masked configuration (their validators call this too), so neither the
spool nor the database ever holds the secret.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any

MASK = "***"

# words that name a secret wherever they appear in a key
_SECRET_WORDS = frozenset({
    "password", "passwd", "passphrase", "secret", "secrets", "apikey", "credential",
    "credentials", "auth", "authorization", "cookie", "cookies", "bearer",
})  # fmt: skip
# word pairs that do (``api_key``, ``aws_secret_access_key``, ``private_key``)
_SECRET_PAIRS = frozenset({
    ("api", "key"), ("access", "key"), ("private", "key"), ("wandb", "key"), ("hf", "key"),
    ("openai", "key"), ("civitai", "key"), ("comet", "key"), ("neptune", "key"),
})  # fmt: skip
# a key ending in one of these words (``hub_token``, ``hf_token``, ``token``); a key that
# merely contains "token" (``max_token_length``, ``tokenizer_name``) is no secret
_SECRET_LAST_WORDS = frozenset({"token", "tokens", "pat"})

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[a-z0-9]+")
# scheme://user:password@ -- the password (up to the last "@" before the path) is masked
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*:)([^\s/?#]*)(@)")


@functools.lru_cache(maxsize=4096)  # metadata repeats its keys in every checkpoint
def is_secret_key(key: str) -> bool:
    """Whether a configuration key (or a command-line flag) names a secret."""
    words = _WORD.findall(_CAMEL.sub(r"\1_\2", key.lstrip("-")).lower())
    if not words:
        return False
    if words[-1] in _SECRET_LAST_WORDS or _SECRET_WORDS.intersection(words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


@functools.lru_cache(maxsize=1024)
def _counts_tokens(key: str) -> bool:
    """``keep_tokens``, ``max_tokens``: a key whose last word is "tokens"."""
    words = _WORD.findall(_CAMEL.sub(r"\1_\2", key.lstrip("-")).lower())
    return bool(words) and words[-1] == "tokens"


# a flag and its value in a command line written as one string: --hub_token hf_x,
# --hub_token=hf_x, --hub_token "hf x"
_FLAG_VALUE = re.compile(r"""(?<![\w-])(--?[A-Za-z][\w.-]*)(=|[ \t]+)("[^"]*"|'[^']*'|[^\s"']+)""")


def mask_text(text: str) -> str:
    """``text`` with the password of every URL in it masked, and the value of every
    command-line flag in it that names a secret."""
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: m[1] + MASK + m[3], text)
    if "--" in text:  # (a path's dashes alone do not cost a search)
        text = _FLAG_VALUE.sub(_masked_flag, text)
    return text


def _masked_flag(match: re.Match[str]) -> str:
    flag, between, value = match[1], match[2], match[3]
    if (
        not is_secret_key(flag) or value.startswith("-") or value == MASK
        or (value.isascii() and value.isdigit() and _counts_tokens(flag))
    ):  # fmt: skip
        return match[0]
    return flag + between + MASK


def mask_secrets(value: Any) -> Any:
    """A copy of ``value`` (JSON-like: dicts, lists, strings, numbers) with every secret
    masked; what holds none comes back equal."""
    if isinstance(value, dict):
        return {key: _masked_entry(key, item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return _masked_list(list(value))
    if isinstance(value, str):
        return mask_text(value)
    return value


def mask_mapping(values: dict[str, str]) -> dict[str, str]:
    """A ``str -> str`` mapping (checkpoint metadata) with its secrets masked (a count
    under a key ending in "tokens", kohya's ``ss_keep_tokens = "1"``, is no secret: every
    metadata value is a string)."""
    # (a backfill asks for every file: the keys and values to look at are found at C speed)
    masked = dict(values)
    joined = "".join(values.values())
    if "://" in joined or "--" in joined:
        for key, text in values.items():
            if "://" in text or "--" in text:
                masked[key] = mask_text(text)
    for key in filter(is_secret_key, values):
        text = values[key]
        if (
            text and text not in ("None", "null")
            and not (text.isascii() and text.isdigit() and _counts_tokens(key))
        ):  # fmt: skip
            masked[key] = MASK
    return masked


def _masked_entry(key: Any, item: Any) -> Any:
    if is_secret_key(str(key)) and _holds_secret(item):
        return MASK
    return mask_secrets(item)


def _holds_secret(item: Any) -> bool:
    if item is None or isinstance(item, (bool, int, float)):
        return False
    return not (isinstance(item, (str, list, tuple, dict)) and len(item) == 0)


def _masked_list(items: list[Any]) -> list[Any]:
    """A list; in a command line, the value after a flag naming a secret is masked."""
    masked: list[Any] = []
    hide_next = False
    for item in items:
        if hide_next and isinstance(item, str) and not item.startswith("--"):
            masked.append(MASK)
            hide_next = False
            continue
        hide_next = False
        if isinstance(item, str) and item.startswith("-"):
            flag, equals, rest = item.partition("=")
            if is_secret_key(flag):
                if equals:
                    masked.append(f"{flag}={MASK}" if rest else item)
                else:
                    masked.append(item)
                    hide_next = True
                continue
        masked.append(mask_secrets(item))
    return masked
