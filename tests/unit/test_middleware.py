"""HOTMESH_MIDDLEWARE: system checks, the chain runner, and headers in payloads."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

import hotmesh_django as hm
from hotmesh_django import middleware
from hotmesh_django.checks import check_middleware
from hotmesh_django.serialization import decode_call, decode_headers, encode_call

DEFS = "tests.integration.middleware_defs"


def test_no_middleware_passes_the_checks() -> None:
    assert check_middleware() == []


@override_settings(
    HOTMESH_MIDDLEWARE=[f"{DEFS}.TenantMiddleware", f"{DEFS}.OuterMiddleware"],
)
def test_good_middleware_passes_the_checks() -> None:
    assert check_middleware() == []


@pytest.mark.parametrize(
    ("value", "check_id", "words"),
    [
        (f"{DEFS}.TenantMiddleware", "hotmesh.E030", "must be a list"),
        ([42], "hotmesh.E030", "dotted paths"),
        (["tests.no_such_module.Thing"], "hotmesh.E031", "cannot be imported"),
        ([f"{DEFS}.NoSuchClass"], "hotmesh.E031", "cannot be imported"),
        ([f"{DEFS}.not_a_class"], "hotmesh.E032", "not a class"),
        ([f"{DEFS}.NotMiddleware"], "hotmesh.E033", "does not subclass"),
        ([f"{DEFS}.NeedsArguments"], "hotmesh.E034", "without arguments"),
    ],
)
def test_bad_middleware_is_reported_with_an_id_and_a_hint(
    value: Any, check_id: str, words: str
) -> None:
    with override_settings(HOTMESH_MIDDLEWARE=value):
        errors = check_middleware()
        with pytest.raises(ImproperlyConfigured, match=words):
            middleware.loaded()
    assert [e.id for e in errors] == [check_id]
    assert words in errors[0].msg
    assert "hotmesh_django.middleware.Middleware" in (errors[0].hint or "")


def _hook(label: str, log: list[str]) -> Callable[[Any, Callable[[Any], Any]], Any]:
    def hook(call: Any, call_next: Callable[[Any], Any]) -> Any:
        log.append(f"{label}>")
        result = call_next([*call, label])
        log.append(f"<{label}")
        return result

    return hook


def test_run_nests_hooks_outermost_first_and_passes_the_changed_call() -> None:
    log: list[str] = []
    hooks = (_hook("a", log), _hook("b", log))
    assert middleware.run(hooks, ["start"], lambda call: [*call, "end"]) == [
        "start",
        "a",
        "b",
        "end",
    ]
    assert log == ["a>", "b>", "<b", "<a"]
    assert middleware.run((), ["only"], lambda call: call) == ["only"]


def test_headers_are_empty_outside_a_job() -> None:
    assert hm.headers() == {}
    with pytest.raises(TypeError):
        hm.headers()["tenant"] = "x"  # type: ignore[index]


def test_headers_ride_in_the_call_payload_only_when_present() -> None:
    assert encode_call((1,), {"b": 2}) == {"args": [1], "kwargs": {"b": 2}}
    assert encode_call((1,), {}, {}) == {"args": [1], "kwargs": {}}
    day = datetime.date(2026, 11, 25)
    data = encode_call((), {}, {"tenant": "acme", "since": day})
    assert data["headers"] == {"tenant": "acme", "since": {"__hm__": "date", "v": "2026-11-25"}}
    assert decode_call(data) == ([], {})
    assert decode_headers(data) == {"tenant": "acme", "since": day}
    assert decode_headers({"args": [], "kwargs": {}}) == {}


def test_bad_headers_are_refused_naming_the_header() -> None:
    with pytest.raises(TypeError, match=r"headers\['span'\]"):
        encode_call((), {}, {"span": object()})
    with pytest.raises(TypeError, match="headers must be a dict"):
        encode_call((), {}, ["tenant"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Malformed headers"):
        decode_headers({"args": [], "kwargs": {}, "headers": ["tenant"]})
