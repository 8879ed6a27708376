from __future__ import annotations

import datetime
import decimal
import functools
import json
import uuid
from typing import Any

import pytest
from django.test import override_settings

from hotmesh_django import PayloadTooLarge
from hotmesh_django.definitions import positional_names
from hotmesh_django.serialization import (
    decode_call,
    encode_call,
    encode_call_text,
    from_json,
    search_text,
    to_json,
)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -5,
        1.5,
        "text",
        "ünïcødé ✓",
        [],
        {},
        [1, [2, [3]]],
        {"nested": {"list": [1, "a", None]}},
        datetime.datetime(2026, 11, 25, 8, 30, tzinfo=datetime.UTC),
        datetime.date(2026, 11, 25),
        datetime.time(8, 30, 15),
        datetime.time(8, 30, 15, 250, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        datetime.timedelta(days=1, seconds=5),
        decimal.Decimal("19.99"),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        {"when": datetime.date(2026, 1, 1), "amount": decimal.Decimal("0.10")},
    ],
)
def test_round_trip(value: Any) -> None:
    stored = json.loads(json.dumps(to_json(value)))  # what a JSONB column gives back
    assert from_json(stored) == value


def test_tuples_come_back_as_lists() -> None:
    assert from_json(to_json((1, 2))) == [1, 2]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (object(), "argument 1 is of type object"),
        ({1, 2}, "of type set"),
        (float("nan"), "JSON cannot represent"),
        (float("inf"), "JSON cannot represent"),
        ("a\x00b", "NUL"),
        ("\ud800", "not valid UTF-8"),
        ({1: "a"}, "keys must be strings"),
        ({"__hm__": "date"}, "reserved key"),
    ],
)
def test_bad_values_raise_type_error_naming_the_argument(value: Any, fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment):
        encode_call(("fine", value), {})


def test_positional_argument_is_named_by_its_parameter_when_known() -> None:
    with pytest.raises(TypeError, match=r"argument 1 \('cents'\) is of type object"):
        encode_call((42, object()), {}, names=("order_id", "cents"))
    # Past the named parameters (a *args function): the position alone.
    with pytest.raises(TypeError, match=r"argument 2 is of type object"):
        encode_call((42, 1, object()), {}, names=("order_id", "cents"))


def test_positional_names_of_a_function() -> None:
    def f(a: int, /, b: int, *rest: int, c: int = 0, **extra: int) -> None: ...

    assert positional_names(f) == ("a", "b")
    assert positional_names(len) == ("obj",)
    assert positional_names(functools.partial(f, 1)) == ("b",)


def test_bad_keyword_argument_is_named() -> None:
    with pytest.raises(TypeError, match="argument 'when'"):
        encode_call((), {"when": object()})


def test_circular_structures_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match="reference to itself"):
        to_json(loop)


def test_deep_nesting_is_refused() -> None:
    deep: Any = []
    for _ in range(500):
        deep = [deep]
    with pytest.raises(TypeError, match="nested more than"):
        to_json(deep)


@override_settings(HOTMESH_MAX_PAYLOAD_BYTES=100)
def test_oversized_arguments_are_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="HOTMESH_MAX_PAYLOAD_BYTES=100"):
        encode_call(("x" * 200,), {})


@override_settings(HOTMESH_MAX_PAYLOAD_BYTES=100)
def test_oversized_arguments_are_refused_as_text_too() -> None:
    with pytest.raises(PayloadTooLarge, match="The arguments are 2\\d\\d bytes"):
        encode_call_text(("x" * 200,), {})
    # Exactly at the limit is allowed: the limit is the largest size, not one past it.
    at_limit = encode_call_text(("x" * (100 - len('{"args":[""],"kwargs":{}}')),), {})
    assert len(at_limit) == 100


@override_settings(HOTMESH_MAX_PAYLOAD_BYTES=100)
@pytest.mark.parametrize("encode", [encode_call, encode_call_text])
def test_oversized_arguments_name_the_largest_one(encode: Any) -> None:
    with pytest.raises(PayloadTooLarge, match="the largest is argument 1, 152 bytes"):
        encode((1, "x" * 150, "y"), {"z": 2})
    with pytest.raises(PayloadTooLarge, match="the largest is argument 'note', 302 bytes"):
        encode((1,), {"note": "x" * 300})


@override_settings(HOTMESH_MAX_PAYLOAD_BYTES=100)
def test_oversized_search_attributes_are_refused() -> None:
    with pytest.raises(PayloadTooLarge, match="The search attributes object is 1\\d\\d bytes"):
        search_text({"s": "q" * 120})
    assert search_text({"s": "q"}) == '{"s":"q"}'


def test_call_text_is_the_json_of_the_encoded_call() -> None:
    args = (1, "ü", datetime.date(2026, 12, 4), decimal.Decimal("1.10"))
    kwargs = {"when": datetime.datetime(2026, 12, 4, 9, 0, tzinfo=datetime.UTC)}
    headers = {"trace": "abc"}
    text = encode_call_text(args, kwargs, headers)
    assert text.isascii()  # so its length is its size in bytes
    assert json.loads(text) == encode_call(args, kwargs, headers)
    assert decode_call(json.loads(text)) == (list(args), kwargs)


def test_call_text_names_the_argument_that_is_not_json() -> None:
    with pytest.raises(TypeError, match="argument 'x' is of type object"):
        encode_call_text((), {"x": object()})


@pytest.mark.parametrize("garbage", [None, "text", [1], {"args": "nope"}, {"kwargs": []}])
def test_malformed_call_payloads_raise_value_error(garbage: Any) -> None:
    with pytest.raises(ValueError, match="Malformed call payload"):
        decode_call(garbage)


def test_unknown_tag_raises_value_error() -> None:
    with pytest.raises(ValueError, match="Unknown value tag"):
        from_json({"__hm__": "pickle", "v": "x"})
