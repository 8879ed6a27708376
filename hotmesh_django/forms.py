"""Forms of the admin's operations: send a signal, re-run from a step, answer a task."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from hotmesh_django.exceptions import PayloadTooLarge
from hotmesh_django.serialization import check_size, to_json


def parse_json(text: str, *, what: Any) -> Any:
    """The JSON value typed into an admin form, or a ValidationError saying what is
    wrong with it: not JSON, NaN or Infinity (Python's parser takes them, JSON has
    no such values), nested too deeply, text Postgres cannot store, the reserved
    "__hm__" key, or over HOTMESH_MAX_PAYLOAD_BYTES."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            _("%(what)s is not valid JSON: %(error)s (line %(line)s, column %(col)s)."),
            code="invalid_json",
            params={"what": what, "error": exc.msg, "line": exc.lineno, "col": exc.colno},
        ) from None
    except RecursionError:
        raise forms.ValidationError(
            _("%(what)s is nested too deeply."), code="invalid_json", params={"what": what}
        ) from None
    try:
        check_size(to_json(value, what=str(what)), what=str(what))
    except TypeError as exc:
        raise forms.ValidationError(str(exc), code="invalid") from None
    except PayloadTooLarge as exc:
        raise forms.ValidationError(str(exc), code="too_large") from None
    return value


class SignalForm(forms.Form):
    """A signal name and an optional JSON payload."""

    name = forms.CharField(
        label=_("Signal name"),
        max_length=255,
        strip=True,
        widget=forms.TextInput(attrs={"placeholder": "approved", "size": 30}),
        help_text=_("The name the workflow waits for with hm.wait_for_signal()."),
    )
    payload = forms.CharField(
        label=_("Payload (JSON)"),
        required=False,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 50, "placeholder": '{"ok": true}'}),
        help_text=_("Any JSON value; leave empty to send null."),
    )

    def clean_payload(self) -> Any:
        text = self.cleaned_data["payload"]
        if not text:
            return None
        return parse_json(text, what=_("The payload"))


class RerunForm(forms.Form):
    """The step to re-run a job from; the choices list the job's steps when known."""

    step = forms.IntegerField(
        label=_("Re-run from step"),
        min_value=1,
        help_text=_("That step and every later one are forgotten and run again."),
    )

    def __init__(
        self, *args: Any, steps: list[tuple[int, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if steps:
            self.fields["step"] = forms.TypedChoiceField(
                label=_("Re-run from step"),
                coerce=int,
                choices=steps,
                help_text=self.fields["step"].help_text,
            )


class AnswerForm(forms.Form):
    """The JSON answer that resolves a human task."""

    answer = forms.CharField(
        label=_("Answer (JSON)"),
        strip=True,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "placeholder": '{"approved": true}'}),
        help_text=_("Any JSON value; the workflow's hm.wait_for_human() returns it."),
    )

    def clean_answer(self) -> Any:
        return parse_json(self.cleaned_data["answer"], what=_("The answer"))
