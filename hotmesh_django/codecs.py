"""Payload codecs: transform user values on their way into and out of the database.

`HOTMESH_CODEC` names a codec (a dotted path to a class, instantiated with no
arguments, or to an object). A codec has two methods that take and return JSON data:

    encode(data) -> data    # before a value is written
    decode(data) -> data    # after it is read

The engine wraps what `encode` returns in `{"__hm__": "codec", "v": ...}` (see
`serialization.seal`), so values written before the codec was turned on are still
read as they are, and a sealed value read without the codec fails loudly instead of
reaching a workflow as an envelope.

`FernetCodec` is the ready one: authenticated encryption (AES-128-CBC and
HMAC-SHA256) with the keys in `HOTMESH_CODEC_KEYS`; the first key encrypts, every key
decrypts, so keys rotate by putting a new one first.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from hotmesh_django.conf import settings
from hotmesh_django.exceptions import CodecError

__all__ = ["Codec", "CodecError", "FernetCodec", "active_codec", "fernet_key_problems"]


@runtime_checkable
class Codec(Protocol):
    """What HOTMESH_CODEC must name: JSON data in, JSON data out, both ways."""

    def encode(self, data: Any) -> Any: ...

    def decode(self, data: Any) -> Any: ...


def fernet_key_problems(keys: Any) -> list[str]:
    """Return what is wrong with `keys` as HOTMESH_CODEC_KEYS (empty when fine)."""
    if isinstance(keys, str | bytes) or not isinstance(keys, list | tuple):
        return [
            f"HOTMESH_CODEC_KEYS must be a list of Fernet keys, not {type(keys).__name__}"
            + (" (a single key must be in a list)" if isinstance(keys, str | bytes) else "")
            + "."
        ]
    if not keys:
        return ["HOTMESH_CODEC_KEYS is empty: FernetCodec needs at least one key."]
    problems = []
    for i, key in enumerate(keys):
        if not isinstance(key, str | bytes):
            problems.append(f"HOTMESH_CODEC_KEYS[{i}] is a {type(key).__name__}, not a key string.")
            continue
        try:
            raw = base64.urlsafe_b64decode(key)
        except (binascii.Error, ValueError):
            raw = b""
        # Never echo the key itself: it is a secret and this text reaches logs.
        if len(raw) != 32:
            problems.append(
                f"HOTMESH_CODEC_KEYS[{i}] is not a Fernet key (32 url-safe base64-encoded "
                "bytes, 44 characters)."
            )
    return problems


class FernetCodec:
    """Encrypt every stored value with Fernet; keys from HOTMESH_CODEC_KEYS.

    The first key encrypts; all keys decrypt (cryptography's MultiFernet), so a key
    is rotated by putting a new one first, running `manage.py hotmesh_reseal`, then
    dropping the old one. A value is stored as the token string, which is itself JSON.
    """

    def __init__(self, keys: Sequence[str | bytes] | None = None) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:  # pragma: no cover - cryptography is a dependency
            raise ImproperlyConfigured(
                "FernetCodec needs the cryptography package: pip install 'hotmesh-django[crypto]'."
            ) from exc
        if keys is None:
            keys = getattr(django_settings, "HOTMESH_CODEC_KEYS", None)
            if keys is None:
                raise ImproperlyConfigured("FernetCodec needs HOTMESH_CODEC_KEYS.")
        problems = fernet_key_problems(keys)
        if problems:
            raise ImproperlyConfigured(" ".join(problems))
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encode(self, data: Any) -> str:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def decode(self, data: Any) -> Any:
        from cryptography.fernet import InvalidToken

        if not isinstance(data, str):
            raise CodecError(f"A Fernet token is a string, not {type(data).__name__}.")
        try:
            text = self._fernet.decrypt(data.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise CodecError(
                "None of the HOTMESH_CODEC_KEYS decrypts this value: it was encrypted with a "
                "key that is not (or no longer) in the list, or it was altered."
            ) from None
        return json.loads(text)


def active_codec() -> Codec | None:
    """Return the codec HOTMESH_CODEC names, or None when values are stored as they are.

    Raise ImproperlyConfigured when the setting names something unusable: falling
    back to plain storage would write in clear what the operator meant to protect.
    """
    path = settings.codec  # cached: every stored value passes here
    if path is None:
        return None
    return _load(path)


@functools.cache
def _load(path: Any) -> Codec:
    if not isinstance(path, str) or not path:
        raise ImproperlyConfigured(f"HOTMESH_CODEC must be a dotted path, not {path!r}.")
    try:
        found = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"HOTMESH_CODEC {path!r} cannot be imported: {exc}") from exc
    codec = found() if isinstance(found, type) else found
    if not callable(getattr(codec, "encode", None)) or not callable(getattr(codec, "decode", None)):
        raise ImproperlyConfigured(f"HOTMESH_CODEC {path!r} has no encode() and decode() methods.")
    return codec  # type: ignore[no-any-return]


@receiver(setting_changed)
def _forget_codec(*, setting: str, **kwargs: Any) -> None:
    # A codec may read other settings (FernetCodec reads its keys) when it is made.
    if setting.startswith("HOTMESH_CODEC"):
        _load.cache_clear()
