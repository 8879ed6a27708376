"""Admin for human tasks: an inbox per role, and claim, release and resolve.

Acting on a task takes two things: the `hotmesh_django.change_humantask` permission
(the admin never edits a task row, so "change" means "may act on tasks") and
membership of the task's role group (superusers act on every role). Users see
only the tasks of their roles; opening another role's task is a 403. Every action
is a POST with CSRF that calls the same guarded function as `hm.claim_task` and
friends, and says what happened or why it was refused.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from hotmesh_django.admin import ReadOnlyAdmin, when
from hotmesh_django.admin_views import job_url, shown_json, status_badge
from hotmesh_django.engine import human
from hotmesh_django.exceptions import HumanTaskError
from hotmesh_django.forms import AnswerForm
from hotmesh_django.models import HumanTask, HumanTaskStatus
from hotmesh_django.redaction import redact
from hotmesh_django.serialization import Unreadable, from_json

if TYPE_CHECKING:
    from django.urls import URLPattern

# The list's default: what the user can act on now.
ACTIONABLE = "actionable"
ALL = "all"


def _shown(value: Any) -> SafeString:
    """Return a task's data or answer decoded, with secrets masked like job values.

    A person's answer (an IBAN, a password reset code) is as sensitive as a job's
    arguments, so HOTMESH_REDACT_KEYS applies here too.
    """
    if isinstance(value, Unreadable):
        return shown_json(value)
    return shown_json(from_json(value))


def task_url(task_id: int) -> str:
    return reverse("admin:hotmesh_django_humantask_change", args=[task_id])


class TaskStatusFilter(admin.SimpleListFilter):
    """Status, defaulting to the tasks the user can act on (an inbox)."""

    title = gettext_lazy("status")
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            (ACTIONABLE, gettext_lazy("Open to me")),
            *HumanTaskStatus.choices,
            (ALL, gettext_lazy("All")),
        ]

    def choices(self, changelist: Any) -> Any:
        # No "All" entry of its own: the default is the inbox, and ALL is a lookup.
        value = self.value() or ACTIONABLE
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == str(lookup),
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value() or ACTIONABLE
        if value == ACTIONABLE:
            return queryset.actionable_by(request.user)  # type: ignore[attr-defined, no-any-return]
        if value == ALL:
            return queryset
        return queryset.filter(status=value)


class RoleFilter(admin.SimpleListFilter):
    title = gettext_lazy("role")
    parameter_name = "role"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # Human-scale numbers of tasks: a DISTINCT over the user's own is cheap.
        roles = (
            HumanTask.objects.in_roles_of(request.user)
            .order_by("role")
            .values_list("role", flat=True)
            .distinct()[:200]
        )
        return [(r, r) for r in roles]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(role=value)


@admin.register(HumanTask)
class HumanTaskAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "role",
        "status_badge",
        "summary",
        "job_link",
        "step",
        "claimed_by",
        "created",
        "due",
    )
    list_display_links = ("id", "summary")
    list_filter = (TaskStatusFilter, RoleFilter)
    list_select_related = ("job", "claimed_by")
    search_fields = ("=job__workflow_id",)
    search_help_text = gettext_lazy("An exact workflow_id.")
    ordering = ("-id",)
    sortable_by = ()
    actions = ("claim_selected", "release_selected")
    change_form_template = "admin/hotmesh_django/humantask/change_form.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("role", "status_badge"),
                    ("job_link", "step"),
                    ("claimed_by", "claimed"),
                    ("resolved_by", "resolved"),
                    ("created", "due"),
                ),
            },
        ),
        (gettext_lazy("Data"), {"fields": ("data_json",)}),
        (gettext_lazy("Answer"), {"fields": ("answer_json",)}),
    )
    readonly_fields = (
        "role",
        "status_badge",
        "job_link",
        "step",
        "claimed_by",
        "claimed",
        "resolved_by",
        "resolved",
        "created",
        "due",
        "data_json",
        "answer_json",
    )

    # -- who sees and who acts ------------------------------------------------------------

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        allowed = user.has_perm("hotmesh_django.view_humantask") or self.has_operate_permission(
            request
        )
        if obj is not None and allowed:
            return HumanTask.objects.in_roles_of(user).filter(pk=obj.pk).exists()
        return bool(allowed)

    def has_operate_permission(self, request: HttpRequest) -> bool:
        """May this user act on tasks (of their roles)? The admin never edits a task,
        so change = act."""
        return bool(request.user.has_perm("hotmesh_django.change_humantask"))

    def get_queryset(self, request: HttpRequest) -> QuerySet[HumanTask]:
        queryset: QuerySet[HumanTask] = super().get_queryset(request)
        return queryset.in_roles_of(request.user)  # type: ignore[attr-defined, no-any-return]

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> HumanTask | None:
        # Unfiltered by role, so another role's task is a 403 (has_view_permission
        # refuses it), not a misleading "does not exist".
        try:
            return HumanTask.objects.select_related("job").get(pk=int(object_id))
        except (HumanTask.DoesNotExist, ValueError):
            return None

    # -- columns and fields ---------------------------------------------------------------

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, obj: HumanTask) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description=gettext_lazy("data"))
    def summary(self, obj: HumanTask) -> str:
        if isinstance(obj.data, Unreadable):
            return _("Cannot decode this value")
        text = json.dumps(redact(from_json(obj.data)), ensure_ascii=False, default=str)
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.display(description=gettext_lazy("job"))
    def job_link(self, obj: HumanTask) -> SafeString:
        return format_html('<a href="{}">{}</a>', job_url(obj.job_id), obj.job.workflow_id)

    @admin.display(description=gettext_lazy("created"), ordering="id")
    def created(self, obj: HumanTask) -> str:
        return when(obj.created_at)

    @admin.display(description=gettext_lazy("due"))
    def due(self, obj: HumanTask) -> str:
        return when(obj.due_at)

    @admin.display(description=gettext_lazy("claimed at"))
    def claimed(self, obj: HumanTask) -> str:
        return when(obj.claimed_at)

    @admin.display(description=gettext_lazy("resolved at"))
    def resolved(self, obj: HumanTask) -> str:
        return when(obj.resolved_at)

    @admin.display(description=gettext_lazy("data"))
    def data_json(self, obj: HumanTask) -> SafeString:
        return _shown(obj.data)

    @admin.display(description=gettext_lazy("answer"))
    def answer_json(self, obj: HumanTask) -> SafeString | str:
        if obj.status != HumanTaskStatus.RESOLVED:
            return "—"
        return _shown(obj.answer)

    # -- the detail page ------------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        task = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if task is not None and self.has_view_permission(request, task):
            context.update(self._panel(request, task))
        return super().change_view(request, object_id, form_url, context)

    def _panel(self, request: HttpRequest, task: HumanTask) -> dict[str, Any]:
        user = request.user
        operate = self.has_operate_permission(request) and human.may_act(task, user)
        mine = task.status == HumanTaskStatus.CLAIMED and task.claimed_by_id == user.pk
        return {
            "hm_task": task,
            "hm_can_operate": operate,
            "hm_can_claim": operate and task.status == HumanTaskStatus.OPEN,
            "hm_can_resolve": operate and mine,
            "hm_can_release": operate
            and task.status == HumanTaskStatus.CLAIMED
            and (mine or bool(getattr(user, "is_superuser", False))),
            "hm_claimed_by_other": task.status == HumanTaskStatus.CLAIMED and not mine,
            "hm_answer_form": AnswerForm(),
        }

    # -- the actions ----------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        urls = [
            path(f"<path:object_id>/{name}/", wrap(view), name=f"{prefix}_{name}")
            for name, view in (
                ("claim", self.claim_view),
                ("release", self.release_view),
                ("resolve", self.resolve_view),
            )
        ]
        return urls + super().get_urls()

    def _actionable(self, request: HttpRequest, object_id: str) -> HumanTask:
        """Return the task, or raise 403 for a user who may not act on it."""
        if not self.has_operate_permission(request):
            raise PermissionDenied
        task = self.get_object(request, unquote(object_id))
        if task is None:
            raise Http404(_("No human task has id %(id)s.") % {"id": object_id})
        if not human.may_act(task, request.user):
            raise PermissionDenied
        return task

    def _report(
        self, request: HttpRequest, task: HumanTask, error: HumanTaskError | None, done: str
    ) -> HttpResponse:
        if error is None:
            self.message_user(request, done, messages.SUCCESS)
        else:
            self.message_user(request, _("Refused: %(why)s") % {"why": error}, messages.ERROR)
        return HttpResponseRedirect(task_url(task.pk))

    def claim_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._claim)(request, object_id)

    def _claim(self, request: HttpRequest, object_id: str) -> HttpResponse:
        task = self._actionable(request, object_id)
        try:
            human.claim_task(task.pk, request.user)
        except HumanTaskError as exc:
            return self._report(request, task, exc, "")
        done = _("Task %(id)d claimed: it is yours to resolve or release.") % {"id": task.pk}
        return self._report(request, task, None, done)

    def release_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._release)(request, object_id)

    def _release(self, request: HttpRequest, object_id: str) -> HttpResponse:
        task = self._actionable(request, object_id)
        try:
            human.release_task(task.pk, request.user)
        except HumanTaskError as exc:
            return self._report(request, task, exc, "")
        done = _("Task %(id)d released: anyone in role %(role)s may claim it.") % {
            "id": task.pk,
            "role": task.role,
        }
        return self._report(request, task, None, done)

    def resolve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return require_POST(self._resolve)(request, object_id)

    def _resolve(self, request: HttpRequest, object_id: str) -> HttpResponse:
        task = self._actionable(request, object_id)
        form = AnswerForm(request.POST)
        if not form.is_valid():
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "original": task,
                "form": form,
                "title": _("Resolve task %(id)d") % {"id": task.pk},
                "action_url": reverse("admin:hotmesh_django_humantask_resolve", args=[task.pk]),
                "has_view_permission": True,
                "media": self.media,
            }
            return TemplateResponse(
                request, "admin/hotmesh_django/humantask/resolve_form.html", context, status=400
            )
        try:
            human.resolve_task(task.pk, form.cleaned_data["answer"], request.user)
        except HumanTaskError as exc:
            return self._report(request, task, exc, "")
        done = _("Task %(id)d resolved: its workflow resumes with the answer.") % {"id": task.pk}
        return self._report(request, task, None, done)

    # -- bulk actions ---------------------------------------------------------------------

    def _bulk(
        self, request: HttpRequest, queryset: QuerySet[HumanTask], act: Any, verb: str
    ) -> None:
        done, refused = 0, []
        for task in queryset.order_by("id")[:1000]:
            try:
                act(task.pk, request.user)
            except HumanTaskError as exc:
                refused.append(str(exc))
            else:
                done += 1
        self.message_user(
            request,
            _("%(n)d task(s) %(verb)s.") % {"n": done, "verb": verb},
            messages.SUCCESS if done else messages.WARNING,
        )
        for reason in refused[:20]:
            self.message_user(request, _("Refused: %(why)s") % {"why": reason}, messages.ERROR)

    @admin.action(description=gettext_lazy("Claim selected tasks"), permissions=["operate"])
    def claim_selected(self, request: HttpRequest, queryset: QuerySet[HumanTask]) -> None:
        self._bulk(request, queryset, human.claim_task, _("claimed"))

    @admin.action(description=gettext_lazy("Release selected tasks"), permissions=["operate"])
    def release_selected(self, request: HttpRequest, queryset: QuerySet[HumanTask]) -> None:
        self._bulk(request, queryset, human.release_task, _("released"))
