"""Hypothesis-generated arguments: each round-trips or fails cleanly, enqueuing nothing."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotmesh_django.exceptions import PayloadTooLarge
from hotmesh_django.models import Job, Stream
from hotmesh_django.serialization import decode_call, encode_call, from_json, to_json
from tests import activities as a

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text with lone surrogates (not valid UTF-8), NUL and everything else.
texts = st.text(st.characters(codec=None), max_size=30)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.binary(max_size=10),  # bytes: not JSON
    st.sets(st.integers(), max_size=3),
    st.datetimes(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(texts, st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _circular(kind: str) -> Any:
    if kind == "list":
        loop: list[Any] = [1]
        loop.append(loop)
        return loop
    node: dict[str, Any] = {"a": 1}
    node["self"] = {"deeper": [node]}
    return node


odd = st.one_of(
    st.integers(1, 400).map(_nested),
    st.sampled_from(["list", "dict"]).map(_circular),
    st.integers(0, 2_500_000).map(lambda n: "x" * n),  # over HOTMESH_MAX_PAYLOAD_BYTES
    st.just(float("nan")),
    st.just("\udcff lone surrogate"),
    st.just(b"\xff\xfe not utf-8".decode("utf-8", "surrogateescape")),
)
arguments = st.one_of(values, odd)


def _plain(value: Any) -> Any:
    """What a JSON round trip should give back: tuples as lists."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right)


def _jsonb_exact(value: Any, depth: int = 0) -> bool:
    """True for every value: floats JSONB would store inexactly are tagged."""
    if depth > 50:  # deep or circular: start() rejects or stores it without floats
        return True
    if isinstance(value, float):
        return True  # large floats are stored tagged, so they round-trip exactly
    if isinstance(value, list | tuple):
        return all(_jsonb_exact(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(_jsonb_exact(v, depth + 1) for v in value.values())
    return True


@FUZZ
@given(arguments)
def test_to_json_round_trips_or_raises_a_clean_error(value: Any) -> None:
    try:
        data = to_json(value)
    except (TypeError, ValueError):
        return
    assert _same(from_json(data), _plain(value))


@FUZZ
@given(
    st.lists(arguments, max_size=3),
    st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), arguments, max_size=2),
)
def test_encode_call_round_trips_or_raises_a_clean_error(
    args: list[Any], kwargs: dict[str, Any]
) -> None:
    try:
        data = encode_call(tuple(args), kwargs)
    except (TypeError, ValueError) as exc:
        assert str(exc)
        return
    assert decode_call(data) == (_plain(args), _plain(kwargs))


@pytest.mark.django_db
@FUZZ
@given(arguments.filter(_jsonb_exact))
def test_start_enqueues_a_round_trip_or_nothing(value: Any) -> None:
    jobs, messages = Job.objects.count(), Stream.objects.count()
    try:
        handle = a.echo.start(value)
    except (TypeError, ValueError) as exc:  # PayloadTooLarge is a ValueError
        assert isinstance(exc, TypeError | PayloadTooLarge) or "argument" in str(exc)
        assert (Job.objects.count(), Stream.objects.count()) == (jobs, messages)
        return
    stored = Job.objects.get(workflow_id=handle.id).input
    args, kwargs = decode_call(stored)
    assert kwargs == {} and _same(args[0], _plain(value))
    assert Stream.objects.count() == messages + 1


@pytest.mark.django_db
def test_a_large_float_argument_round_trips_through_the_database() -> None:
    value = 4.934299577940654e16
    handle = a.echo.start(value)
    args, _ = decode_call(Job.objects.get(workflow_id=handle.id).input)
    assert type(args[0]) is float and args[0] == value
