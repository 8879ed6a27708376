"""The payload codec: FernetCodec, the sealed envelope, and its system checks."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import subprocess
import sys
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from hotmesh_django.checks import check_codec
from hotmesh_django.codecs import FernetCodec, active_codec, fernet_key_problems
from hotmesh_django.exceptions import CodecError
from hotmesh_django.serialization import (
    Unreadable,
    decode_call,
    encode_call,
    from_json,
    is_sealed,
    open_stored,
    readable,
    seal,
    to_json,
    unseal,
)
from tests.conftest import ROOT

KEY_A = Fernet.generate_key().decode()
KEY_B = Fernet.generate_key().decode()
FERNET = "hotmesh_django.codecs.FernetCodec"


def fernet(*keys: str) -> Any:
    return override_settings(HOTMESH_CODEC=FERNET, HOTMESH_CODEC_KEYS=list(keys))


# -- FernetCodec ---------------------------------------------------------------------------


def test_fernet_round_trips_json_and_hides_it() -> None:
    codec = FernetCodec([KEY_A])
    data = {"card": "4111 1111 1111 1111", "n": [1, 2.5, None, True], "é": "ü"}
    token = codec.encode(data)
    assert isinstance(token, str)
    assert "4111" not in token and "card" not in token
    assert codec.decode(token) == data
    assert codec.encode(data) != token  # a fresh IV each time


def test_fernet_rotation_first_key_encrypts_every_key_decrypts() -> None:
    old = FernetCodec([KEY_A]).encode({"v": 1})
    rotated = FernetCodec([KEY_B, KEY_A])
    assert rotated.decode(old) == {"v": 1}
    new = rotated.encode({"v": 2})
    assert FernetCodec([KEY_B]).decode(new) == {"v": 2}
    with pytest.raises(CodecError, match="None of the HOTMESH_CODEC_KEYS decrypts"):
        FernetCodec([KEY_A]).decode(new)


@pytest.mark.parametrize("token", ["not a token", 42, {"x": 1}, "gAAAAAB" + "x" * 80])
def test_fernet_refuses_what_it_did_not_make(token: Any) -> None:
    with pytest.raises(CodecError):
        FernetCodec([KEY_A]).decode(token)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        (KEY_A, "must be a list of Fernet keys, not str (a single key must be in a list)"),
        ([], "is empty"),
        (["short"], "HOTMESH_CODEC_KEYS[0] is not a Fernet key"),
        ([KEY_A, 7], "HOTMESH_CODEC_KEYS[1] is a int"),
        ([KEY_A, "!" * 44], "HOTMESH_CODEC_KEYS[1] is not a Fernet key"),
    ],
)
def test_bad_fernet_keys_are_named_without_echoing_them(keys: Any, problem: str) -> None:
    problems = fernet_key_problems(keys)
    assert any(problem in p for p in problems), problems
    assert not any("short" in p or "!!!!" in p for p in problems)
    with pytest.raises(ImproperlyConfigured):
        FernetCodec(keys)


def test_good_keys_have_no_problems() -> None:
    assert fernet_key_problems([KEY_A, KEY_B.encode()]) == []


# -- the sealed envelope ---------------------------------------------------------------------


def test_without_a_codec_values_are_stored_as_they_are() -> None:
    data = encode_call((1, "x"), {})
    assert active_codec() is None
    assert seal(data) is data
    assert unseal(data) is data


def test_seal_wraps_the_codec_output_and_from_json_opens_it() -> None:
    value = {"when": datetime.date(2026, 11, 25), "amount": decimal.Decimal("9.99")}
    with fernet(KEY_A):
        stored = seal(to_json(value))
        assert is_sealed(stored)
        assert set(stored) == {"__hm__", "v"} and stored["__hm__"] == "codec"
        assert "9.99" not in json.dumps(stored)
        assert from_json(stored) == value
        args, kwargs = decode_call(seal(encode_call((value,), {"k": 1})))
        assert args == [value] and kwargs == {"k": 1}


def test_seal_leaves_none_and_sealed_values_alone() -> None:
    with fernet(KEY_A):
        assert seal(None) is None
        once = seal({"a": 1})
        assert seal(once) is once  # copying a stored value never seals it twice


def test_plain_values_from_before_the_codec_are_still_read() -> None:
    plain = encode_call(("written before the codec",), {})
    with fernet(KEY_A):
        assert decode_call(plain) == (["written before the codec"], {})
        assert unseal(plain) == plain


def test_a_sealed_value_read_without_the_codec_fails_clearly() -> None:
    with fernet(KEY_A):
        stored = seal({"a": 1})
    with pytest.raises(CodecError, match="no codec is set in this process"):
        from_json(stored)


def test_a_value_sealed_with_another_key_loads_as_unreadable() -> None:
    with fernet(KEY_A):
        stored = seal({"a": 1})
    with fernet(KEY_B):
        loaded = open_stored(stored)
        assert isinstance(loaded, Unreadable)
        assert loaded.stored == stored
        with pytest.raises(CodecError, match="None of the HOTMESH_CODEC_KEYS"):
            readable(loaded)
        with pytest.raises(CodecError):
            from_json(loaded)


def test_user_data_cannot_pose_as_a_sealed_value() -> None:
    with pytest.raises(TypeError, match="reserved key"):
        to_json({"__hm__": "codec", "v": "x"})


class Reverser:
    """A codec that is not encryption: reverses strings (test double for any codec)."""

    def encode(self, data: Any) -> Any:
        return json.dumps(data)[::-1]

    def decode(self, data: Any) -> Any:
        return json.loads(data[::-1])


class Broken:
    def encode(self, data: Any) -> Any:
        return {"oops": data}

    def decode(self, data: Any) -> Any:
        return data


class Unstorable:
    def encode(self, data: Any) -> Any:
        return b"bytes are not JSON"

    def decode(self, data: Any) -> Any:
        return data


class Raising:
    def encode(self, data: Any) -> Any:
        raise RuntimeError("kms unreachable")

    def decode(self, data: Any) -> Any:
        raise RuntimeError("kms unreachable")


reverser = Reverser()


@override_settings(HOTMESH_CODEC="tests.unit.test_codecs.reverser")
def test_any_object_with_encode_and_decode_is_a_codec() -> None:
    stored = seal({"a": [1, 2]})
    assert stored == {"__hm__": "codec", "v": '}]2 ,1[ :"a"{'}
    assert from_json(stored) == {"a": [1, 2]}
    assert check_codec() == []


@override_settings(HOTMESH_CODEC="tests.unit.test_codecs.Raising")
def test_codec_failures_become_codec_errors() -> None:
    with pytest.raises(CodecError, match="could not encode a value: RuntimeError: kms"):
        seal({"a": 1})
    with pytest.raises(CodecError, match="could not decode a value: RuntimeError: kms"):
        unseal({"__hm__": "codec", "v": "x"})


@override_settings(HOTMESH_CODEC="no.such.Codec")
def test_a_codec_that_cannot_load_never_falls_back_to_plain() -> None:
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        seal({"a": 1})


# -- system checks -----------------------------------------------------------------------------


def _ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


@pytest.mark.parametrize(
    ("settings", "check_id", "text"),
    [
        ({"HOTMESH_CODEC": 42}, "hotmesh.E020", "must be a dotted path"),
        ({"HOTMESH_CODEC": "no.such.Codec"}, "hotmesh.E020", "cannot be imported"),
        ({"HOTMESH_CODEC": "json.dumps"}, "hotmesh.E021", "has no encode() and decode()"),
        ({"HOTMESH_CODEC": FERNET}, "hotmesh.E022", "HOTMESH_CODEC_KEYS is not set"),
        ({"HOTMESH_CODEC": FERNET, "HOTMESH_CODEC_KEYS": []}, "hotmesh.E022", "not set"),
        ({"HOTMESH_CODEC": FERNET, "HOTMESH_CODEC_KEYS": KEY_A}, "hotmesh.E023", "in a list"),
        (
            {"HOTMESH_CODEC": FERNET, "HOTMESH_CODEC_KEYS": [KEY_A, "nope"]},
            "hotmesh.E023",
            "HOTMESH_CODEC_KEYS[1] is not a Fernet key",
        ),
        ({"HOTMESH_CODEC": "tests.unit.test_codecs.Broken"}, "hotmesh.E024", "give back"),
        ({"HOTMESH_CODEC": "tests.unit.test_codecs.Unstorable"}, "hotmesh.E024", "round trip"),
        ({"HOTMESH_CODEC": "tests.unit.test_codecs.Raising"}, "hotmesh.E024", "kms unreachable"),
    ],
)
def test_bad_codec_settings_fail_system_checks(
    settings: dict[str, Any], check_id: str, text: str
) -> None:
    with override_settings(**settings):
        errors = check_codec()
    assert _ids(errors) == [check_id] * len(errors) and errors
    assert any(text in e.msg for e in errors), [e.msg for e in errors]
    assert all(e.hint for e in errors)


def test_a_working_fernet_setup_passes() -> None:
    with fernet(KEY_B, KEY_A):
        assert check_codec() == []
    assert check_codec() == []  # off


def test_manage_check_reports_bad_keys(tmp_path: Any) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "HOTMESH_TEST_CODEC": "1",
        "HOTMESH_CODEC_KEYS": "not-a-key",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "hotmesh.E023" in result.stderr
    assert "not-a-key" not in result.stderr  # a key is never echoed
