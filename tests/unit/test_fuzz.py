"""Hypothesis-generated arguments: each round-trips or fails cleanly, enqueuing nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotmesh_django.exceptions import PayloadTooLarge
from hotmesh_django.models import Job, Stream
from hotmesh_django.serialization import decode_call, encode_call, from_json, to_json
from tests import activities as a
from tests.fuzzing import FUZZ, arguments, jsonb_exact, plain, same


@FUZZ
@given(arguments)
def test_to_json_round_trips_or_raises_a_clean_error(value: Any) -> None:
    try:
        data = to_json(value)
    except (TypeError, ValueError):
        return
    assert same(from_json(data), plain(value))


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
    assert decode_call(data) == (plain(args), plain(kwargs))


@pytest.mark.django_db
@FUZZ
@given(arguments.filter(jsonb_exact))
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
    assert kwargs == {} and same(args[0], plain(value))
    assert Stream.objects.count() == messages + 1


@pytest.mark.django_db
def test_a_large_float_argument_round_trips_through_the_database() -> None:
    value = 4.934299577940654e16
    handle = a.echo.start(value)
    args, _ = decode_call(Job.objects.get(workflow_id=handle.id).input)
    assert type(args[0]) is float and args[0] == value
