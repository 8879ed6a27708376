"""Redaction of secrets in shown values, free text and log lines."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import override_settings

from hotmesh_django.checks import check_redaction
from hotmesh_django.redaction import MASK, get_logger, redact, redact_text


def test_values_under_secret_keys_are_masked_at_any_depth() -> None:
    data = {
        "user": "bob",
        "Password": "hunter2",
        "nested": [{"api_key": {"id": 1}, "ok": 1}, {"access_token": "t0k"}],
        "db_password_hint": "x",
        "count": 3,
    }
    assert redact(data) == {
        "user": "bob",
        "Password": MASK,
        "nested": [{"api_key": MASK, "ok": 1}, {"access_token": MASK}],
        "db_password_hint": MASK,
        "count": 3,
    }
    assert data["Password"] == "hunter2"  # a copy: stored data is never changed


def test_strings_that_quote_secrets_are_masked_too() -> None:
    shown = redact({"message": "login failed for {'user': 'bob', 'password': 'hunter2'}"})
    assert shown == {"message": f"login failed for {{'user': 'bob', 'password': '{MASK}'}}"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2 user=bob", f"password={MASK} user=bob"),
        ('{"token": "abc", "n": 1}', f'{{"token": "{MASK}", "n": 1}}'),
        ("GET /cb?code=1&api_key=zzz&x=2", f"GET /cb?code=1&api_key={MASK}&x=2"),
        ("Authorization: Bearer abc.def", f"Authorization: {MASK}"),
        ("client_secret = 's3cr3t' then", f"client_secret = '{MASK}' then"),
        ("the password is hunter2", "the password is hunter2"),  # no key: not recognised
        ("author: alice", "author: alice"),
    ],
)
def test_free_text_pairs(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@override_settings(HOTMESH_REDACT_KEYS=["^pin$", "iban"])
def test_the_setting_decides_which_keys() -> None:
    assert redact({"pin": 1, "spin": 2, "IBAN_NL": 3, "password": 4}) == {
        "pin": MASK,
        "spin": 2,
        "IBAN_NL": MASK,
        "password": 4,
    }


@override_settings(HOTMESH_REDACT_KEYS=[])
def test_an_empty_list_turns_it_off() -> None:
    assert redact({"password": "x"}) == {"password": "x"}
    assert redact_text("password=x") == "password=x"


@override_settings(HOTMESH_REDACT_KEYS=["(unclosed"])
def test_a_broken_setting_hides_everything_rather_than_nothing() -> None:
    assert redact({"anything": 1}) == {"anything": MASK}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("password", "must be a list"),
        (["ok", "(unclosed"], "HOTMESH_REDACT_KEYS[1] '(unclosed' is not a regular expression"),
        (["ok", 3], "HOTMESH_REDACT_KEYS[1] must be a non-empty string"),
        ([""], "must be a non-empty string"),
    ],
)
def test_bad_redact_keys_fail_the_system_check(value: Any, text: str) -> None:
    with override_settings(HOTMESH_REDACT_KEYS=value):
        errors = check_redaction()
    assert [e.id for e in errors] == ["hotmesh.E025"]
    assert text in errors[0].msg and errors[0].hint


def test_default_and_empty_settings_pass() -> None:
    assert check_redaction() == []
    with override_settings(HOTMESH_REDACT_KEYS=[]):
        assert check_redaction() == []


def test_log_records_and_their_tracebacks_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    logger = get_logger("hotmesh_django.tests.redaction")
    with caplog.at_level(logging.INFO, logger="hotmesh_django.tests.redaction"):
        logger.info("calling with %s", {"token": "abc123", "n": 1})
        try:
            raise ValueError("bad login password=hunter2")
        except ValueError:
            logger.exception("failed")
    assert "abc123" not in caplog.text and "hunter2" not in caplog.text
    assert f"'token': '{MASK}'" in caplog.text and f"password={MASK}" in caplog.text
