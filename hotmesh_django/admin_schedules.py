"""Admin for cron schedules: edit, enable, disable and trigger now."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from hotmesh_django import registry
from hotmesh_django.engine import schedules
from hotmesh_django.engine.start import check_arguments
from hotmesh_django.exceptions import HotmeshError
from hotmesh_django.models import Schedule


class ScheduleForm(forms.ModelForm):  # type: ignore[type-arg]
    class Meta:
        model = Schedule
        fields = ["name", "workflow", "cron", "timezone", "args", "kwargs", "enabled"]

    def clean(self) -> dict[str, Any]:
        # Cron, timezone and the shape of the arguments: Schedule.clean(). Here, what
        # only this process's registry can tell: a schedule whose workflow is unknown
        # or whose arguments do not fit would be skipped by every worker, silently.
        data = super().clean() or {}
        name = data.get("workflow")
        if not name:
            return data
        if not registry.has_workflow(name):
            self.add_error(
                "workflow",
                f"No workflow named {name!r} is registered. Workers import workflows.py "
                "of each installed app and the HOTMESH_IMPORTS modules; add its module "
                "there so that this process knows it too.",
            )
            return data
        args, kwargs = data.get("args"), data.get("kwargs")
        if isinstance(args, list) and isinstance(kwargs, dict):
            try:
                check_arguments(registry.get_workflow(name), tuple(args), kwargs)
            except TypeError as exc:
                self.add_error("args", str(exc))
        return data


@admin.register(Schedule)
class ScheduleAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = ScheduleForm
    list_display = [
        "name",
        "workflow",
        "cron",
        "timezone",
        "enabled",
        "declared",
        "next_run_at",
        "last_run_at",
    ]
    list_filter = ["enabled", "declared"]
    search_fields = ["name", "workflow"]
    readonly_fields = ["declared", "next_run_at", "last_run_at"]
    actions = ["enable", "disable", "trigger_now"]

    def save_model(self, request: HttpRequest, obj: Schedule, form: Any, change: bool) -> None:
        # As the enable action does: a schedule switched on counts from now, so the
        # slots missed while it was off do not fire.
        moved = {"cron", "timezone"} & set(form.changed_data) or not change
        if moved or ("enabled" in form.changed_data and obj.enabled):
            from django.utils import timezone as tz

            obj.next_run_at = schedules.next_run_after(obj.cron, obj.timezone, tz.now())
        super().save_model(request, obj, form, change)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet[Schedule], on: bool) -> int:
        """Enable or disable the selection; record who changed which in the admin log.

        Actions bypass save_model, so without this only edits through the form would
        appear in "Recent actions".
        """
        names = list(queryset.values_list("name", flat=True))
        moving = list(queryset.exclude(enabled=on))
        changed = schedules.set_enabled(names, on)
        for schedule in moving:
            self.log_change(request, schedule, "Enabled." if on else "Disabled.")
        return changed

    @admin.action(description="Enable selected schedules", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        total = queryset.count()
        changed = self._set_enabled(request, queryset, True)
        self.message_user(
            request, f"{changed} schedule(s) enabled; {total - changed} skipped (already on)."
        )

    @admin.action(description="Disable selected schedules", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        total = queryset.count()
        changed = self._set_enabled(request, queryset, False)
        self.message_user(
            request,
            f"{changed} schedule(s) disabled; {total - changed} skipped (already off).",
        )

    @admin.action(description="Trigger selected schedules now", permissions=["change"])
    def trigger_now(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        started, failed = [], []
        for schedule in queryset:
            try:
                started.append(schedules.trigger_now(schedule.name).id)
            except (HotmeshError, TypeError, ValueError) as exc:
                failed.append(f"{schedule.name}: {exc}")
            else:
                self.log_change(request, schedule, f"Triggered now: started {started[-1]}.")
        self.message_user(request, f"{len(started)} workflow(s) started: {', '.join(started)}.")
        for problem in failed:
            self.message_user(request, f"Skipped {problem}", level=messages.WARNING)
