"""The admin: inspection of jobs, steps, the queue and workers, and safe operations.

Nothing here edits a row. Every page is read-only (`has_add/change/delete_permission`
return False); the operations on jobs (retry, cancel, signal, re-run from a step) are
guarded engine calls, offered to users who hold `hotmesh_django.change_job`. See
`admin_views` for the operations and the diagnosis, `timeline` for the picture.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import IntegerField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import smart_split, unescape_string_literal
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _

from hotmesh_django import timeline
from hotmesh_django.admin_views import (
    JobOperationsMixin,
    diagnose,
    is_live,
    job_url,
    shown_error,
    shown_json,
    status_badge,
)
from hotmesh_django.forms import RerunForm, SignalForm
from hotmesh_django.models import (
    ACTIVE_STATUSES,
    Activity,
    Job,
    JobStatus,
    Journal,
    Signal,
    Stream,
    Worker,
    sources_of,
)
from hotmesh_django.redaction import redact
from hotmesh_django.serialization import Unreadable, to_json

# A job's detail page draws and lists at most this many steps and journal entries.
MAX_STEPS = 500
MAX_JOURNAL = 500
MAX_JOURNAL_TIMELINE = 5000
MAX_CHILDREN = 50


# -- counting without COUNT(*) ------------------------------------------------------------


def estimated_rows(model: type[Any], using: str = "default") -> int:
    """Return the planner's row estimate for `model`'s table (-1 if never analyzed)."""
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [connections[using].ops.quote_name(model._meta.db_table)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else -1


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]
    """A paginator that never runs a full COUNT(*) on a big table.

    Unfiltered, it reads the planner's estimate from pg_class. Filtered, it counts
    at most `exact_below + 1` rows (newest first, the order most filters favour); past
    that it takes the planner's estimate for the filtered query. Counts below
    `exact_below` are exact, so small tables and narrow filters show true numbers.
    """

    exact_below = 10_000

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not isinstance(qs, QuerySet):
            return super().count
        if not qs.query.where:
            estimate = estimated_rows(qs.model, qs.db)
            if estimate >= self.exact_below:
                return estimate
            return qs.order_by().count()
        capped = qs.order_by("-pk").values("pk")[: self.exact_below + 1].count()
        if capped <= self.exact_below:
            return capped
        return max(capped, _planned_rows(qs))


def _planned_rows(qs: QuerySet[Any]) -> int:
    try:
        plan = json.loads(qs.order_by().values("pk").explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])
    except (ValueError, KeyError, IndexError, TypeError):
        return 0


def distinct_values(
    model: type[Any], field: str, *, limit: int = 200, using: str = "default"
) -> list[str]:
    """Return the distinct values of an indexed column with a loose index scan.

    `SELECT DISTINCT` reads every row; the recursive query asks the btree for the
    next larger value once per distinct value, which stays fast at millions of rows.
    `field` names a model field, never user input.
    """
    quote = connections[using].ops.quote_name
    column = quote(model._meta.get_field(field).column)
    table = quote(model._meta.db_table)
    sql = f"""
    WITH RECURSIVE t(v) AS (
        (SELECT {column} FROM {table} ORDER BY {column} LIMIT 1)
        UNION ALL
        SELECT (SELECT {column} FROM {table} WHERE {column} > t.v ORDER BY {column} LIMIT 1)
          FROM t WHERE t.v IS NOT NULL
    )
    SELECT v FROM t WHERE v IS NOT NULL LIMIT %s
    """  # noqa: S608 - identifiers come from the model, quoted; the limit is a parameter
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class DistinctValueFilter(admin.SimpleListFilter):
    """A list filter over an indexed column's values, found by a loose index scan."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(v, v) for v in distinct_values(model_admin.model, self.field)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(**{self.field: value})


class NameFilter(DistinctValueFilter):
    title = _("name")
    parameter_name = field = "name"


class QueueFilter(DistinctValueFilter):
    title = _("queue")
    parameter_name = field = "queue"


# -- the admins -----------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Inspection only: no add, change or delete, and no full COUNT on big tables."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    # Facet counts run one COUNT per filter option over the whole table.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50

    class Media:
        css = {"all": ["hotmesh_django/admin.css"]}

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # The read-only detail pages would print sealed fields with Django's JSON display:
    # in full, secrets and all. Each is swapped for a display that masks them.
    _SHOWN = {"input", "output", "error", "state", "payload", "data"}

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = super().get_fields(request, obj)
        return [f"shown_{f}" if f in self._SHOWN else f for f in fields]

    @admin.display(description=_("input"))
    def shown_input(self, obj: Any) -> SafeString:
        return shown_json(obj.input)

    @admin.display(description=_("output"))
    def shown_output(self, obj: Any) -> SafeString:
        return shown_json(obj.output)

    @admin.display(description=_("error"))
    def shown_error(self, obj: Any) -> SafeString:
        return shown_json(obj.error)

    @admin.display(description=_("published state"))
    def shown_state(self, obj: Any) -> SafeString:
        return shown_json(obj.state)

    @admin.display(description=_("payload"))
    def shown_payload(self, obj: Any) -> SafeString:
        return shown_json(obj.payload)

    @admin.display(description=_("data"))
    def shown_data(self, obj: Any) -> SafeString:
        return shown_json(obj.data)


def when(value: Any, fmt: str = "Y-m-d H:i:s") -> str:
    """Format a datetime in the current time zone, to the second: ops need seconds."""
    if value is None:
        return "—"
    return date_format(timezone.localtime(value), fmt)


def _search_filter(key: str, value: str) -> Any:
    """Match search attribute `key` equal to `value`, read as JSON when it parses.

    `order=42` matches both the number 42 and the string "42". Containment (`@>`)
    is what the GIN index on `search` serves. A value no search attribute can hold
    (NaN, Infinity, a NUL, a lone surrogate: `set_search` refuses them) matches
    nothing rather than reaching Postgres, which would refuse the query.
    """
    candidates = [value]
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        parsed = value
    if parsed != value and not isinstance(parsed, dict | list):
        candidates.append(parsed)
    condition = Q(pk__in=[])
    for candidate in candidates:
        try:
            to_json({key: candidate}, what="search attribute")
        except TypeError:
            continue
        condition |= Q(search__contains={key: candidate})
    return condition


class WholeWorkflowIdSearch:
    """Search pages of rows that belong to a job: the query, typed whole, also
    matches a workflow_id (which is any string: spaces, quotes, a trailing "=")."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        whole = search_term.strip()
        found, may_have_duplicates = super().get_search_results(  # type: ignore[misc]
            request, queryset, search_term
        )
        if not whole:
            return found, may_have_duplicates
        return found | queryset.filter(job__workflow_id=whole), may_have_duplicates


class ActivityInline(admin.TabularInline):  # type: ignore[type-arg]
    model = Activity
    fk_name = "job"
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = _("steps")
    fields = readonly_fields = (
        "seq",
        "kind",
        "name",
        "status_badge",
        "attempts",
        "started",
        "finished",
        "duration",
        "error_summary",
        "child_link",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Activity]:
        return super().get_queryset(request).filter(seq__lte=MAX_STEPS).order_by("seq")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Steps are part of the job: whoever may view the job may view its steps.
        return bool(
            request.user.has_perm("hotmesh_django.view_job")
            or request.user.has_perm("hotmesh_django.change_job")
        )

    @admin.display(description=_("status"))
    def status_badge(self, obj: Activity) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description=_("started"))
    def started(self, obj: Activity) -> str:
        return when(obj.started_at, "H:i:s.u")[:12]

    @admin.display(description=_("finished"))
    def finished(self, obj: Activity) -> str:
        return when(obj.finished_at, "H:i:s.u")[:12]

    @admin.display(description=_("duration"))
    def duration(self, obj: Activity) -> str:
        if obj.started_at is None or obj.finished_at is None:
            return "—"
        return timeline.human_duration((obj.finished_at - obj.started_at).total_seconds())

    @admin.display(description=_("error"))
    def error_summary(self, obj: Activity) -> SafeString | str:
        if not obj.error:
            return "—"
        error = shown_error(obj.error)
        return format_html(
            '<span class="hm-error"><b>{}</b>: {}</span>',
            error.get("type", ""),
            str(error.get("message", ""))[:300],
        )

    @admin.display(description=_("child"))
    def child_link(self, obj: Activity) -> SafeString | str:
        if obj.child_id is None:
            return "—"
        return format_html('<a href="{}">{}</a>', job_url(obj.child_id), _("open child"))


@admin.register(Job)
class JobAdmin(JobOperationsMixin, ReadOnlyAdmin):
    list_display = (
        "workflow_id",
        "name",
        "status_badge",
        "queue",
        "attempts",
        "age",
        "duration_display",
    )
    list_filter = ("status", NameFilter, QueueFilter, "kind", "created_at")
    search_fields = ("=workflow_id",)
    search_help_text = _(
        "An exact workflow_id or name, or search attributes as key=value "
        "(several terms must all match; quote a term that holds spaces)."
    )
    ordering = ("-id",)
    sortable_by = ("created", "status_badge")
    actions = ("retry_failed", "cancel_jobs", "send_signal", "rerun_from_step")
    inlines = (ActivityInline,)
    readonly_fields = (
        "workflow_id",
        "name",
        "kind",
        "status_badge",
        "queue",
        "priority",
        "parent_link",
        "parent_step",
        "created",
        "started",
        "finished",
        "updated",
        "deadline",
        "duration_display",
        "search_table",
        "input_json",
        "output_json",
        "state_json",
        "error_type",
        "error_message",
        "error_traceback",
        "children_links",
        "run_links",
        "human_task_links",
    )

    def get_urls(self) -> list[Any]:
        return self.operation_urls() + super().get_urls()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        # A correlated subquery, evaluated only for the rows of the page shown.
        attempts = (
            Activity.objects.filter(job=OuterRef("pk"))
            .order_by()
            .values("job")
            .annotate(total=Sum("attempts"))
            .values("total")[:1]
        )
        queryset: QuerySet[Job] = super().get_queryset(request)
        return queryset.annotate(
            total_attempts=Coalesce(Subquery(attempts, output_field=IntegerField()), 0)
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        terms = Q()
        for bit in smart_split(search_term):
            if bit.startswith(('"', "'")) and bit[0] == bit[-1] and len(bit) > 1:
                bit = unescape_string_literal(bit)
            key, sep, value = bit.partition("=")
            if sep and key:
                terms &= _search_filter(key, value)
            else:
                terms &= Q(workflow_id=bit) | Q(name=bit)
        # A workflow_id is any string: the whole query, as typed, matches one too
        # (base64 ids end in "=", others hold spaces), whatever the terms say.
        whole = search_term.strip()
        return queryset.filter(Q(workflow_id=whole) | terms if whole else terms), False

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> Any:
        main = [
            "workflow_id",
            ("name", "kind"),
            ("status_badge", "queue", "priority"),
            ("created", "started", "finished"),
            ("duration_display", "updated", "deadline"),
        ]
        if obj is not None and obj.parent_id is not None:
            main.append(("parent_link", "parent_step"))
        fieldsets: list[tuple[Any, dict[str, Any]]] = [(None, {"fields": main})]
        if obj is None:
            return fieldsets
        if obj.search:
            fieldsets.append((_("Search attributes"), {"fields": ["search_table"]}))
        fieldsets.append((_("Input"), {"fields": ["input_json"]}))
        if obj.output is not None:
            fieldsets.append((_("Output"), {"fields": ["output_json"]}))
        if obj.state:  # an empty dict until the workflow calls hm.set_state()
            fieldsets.append((_("Published state"), {"fields": ["state_json"]}))
        if obj.error:
            fieldsets.append(
                (
                    _("Error"),
                    {
                        "fields": ["error_type", "error_message", "error_traceback"],
                    },
                )
            )
        if obj.children.exists():
            fieldsets.append((_("Child workflows"), {"fields": ["children_links"]}))
        if _runs(obj):
            fieldsets.append((_("Runs"), {"fields": ["run_links"]}))
        if obj.human_tasks.exists():
            fieldsets.append((_("Human tasks"), {"fields": ["human_task_links"]}))
        return fieldsets

    # -- columns and fields -------------------------------------------------------------

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Job) -> SafeString:
        badge = status_badge(obj.status, obj.get_status_display())
        if not obj.error:
            return badge
        # The error on hover, so the list stays narrow.
        error = shown_error(obj.error)
        title = f"{error.get('type', '')}: {error.get('message', '')}"[:300]
        return format_html('<span title="{}">{}</span>', title, badge)

    @admin.display(description=_("attempts"))
    def attempts(self, obj: Job) -> int:
        return int(getattr(obj, "total_attempts", 0) or 0)

    @admin.display(description=_("created"), ordering="id")
    def created(self, obj: Job) -> str:
        return when(obj.created_at)

    @admin.display(description=_("age"), ordering="id")
    def age(self, obj: Job) -> SafeString:
        """How long ago the job was created; the time itself on hover."""
        return format_html(
            '<span title="{}">{}</span>', when(obj.created_at), timesince(obj.created_at)
        )

    @admin.display(description=_("started"))
    def started(self, obj: Job) -> str:
        return when(obj.started_at)

    @admin.display(description=_("finished"))
    def finished(self, obj: Job) -> str:
        return when(obj.finished_at)

    @admin.display(description=_("updated"))
    def updated(self, obj: Job) -> str:
        return when(obj.updated_at)

    @admin.display(description=_("deadline"))
    def deadline(self, obj: Job) -> str:
        return when(obj.deadline_at)

    @admin.display(description=_("duration"))
    def duration_display(self, obj: Job) -> str:
        return timeline.human_duration(obj.duration)

    @admin.display(description=_("parent"))
    def parent_link(self, obj: Job) -> SafeString | str:
        if obj.parent_id is None:
            return "—"
        parent = Job.objects.filter(pk=obj.parent_id).values_list("workflow_id", flat=True)
        return format_html(
            '<a href="{}">{}</a>', job_url(obj.parent_id), parent.first() or obj.parent_id
        )

    @admin.display(description=_("search attributes"))
    def search_table(self, obj: Job) -> SafeString:
        rows = format_html_join(
            "",
            "<tr><th><code>{}</code></th><td><code>{}</code></td></tr>",
            (
                (key, json.dumps(value, ensure_ascii=False))
                # Search attributes are stored plain (they are searched), but shown
                # with the same masking as every other value.
                for key, value in sorted(redact(obj.search or {}).items())
            ),
        )
        return format_html('<table class="hm-kv">{}</table>', rows)

    @admin.display(description=_("input"))
    def input_json(self, obj: Job) -> SafeString:
        return shown_json(obj.input)

    @admin.display(description=_("output"))
    def output_json(self, obj: Job) -> SafeString:
        return shown_json(obj.output)

    @admin.display(description=_("published state"))
    def state_json(self, obj: Job) -> SafeString:
        return shown_json(obj.state)

    @admin.display(description=_("type"))
    def error_type(self, obj: Job) -> str:
        return str(shown_error(obj.error).get("type", ""))

    @admin.display(description=_("message"))
    def error_message(self, obj: Job) -> SafeString:
        return format_html(
            '<pre class="hm-message">{}</pre>', str(shown_error(obj.error).get("message", ""))
        )

    @admin.display(description=_("traceback"))
    def error_traceback(self, obj: Job) -> SafeString | str:
        text = shown_error(obj.error).get("traceback")
        if not text:
            return "—"
        return format_html('<pre class="hm-traceback">{}</pre>', text)

    @admin.display(description=_("children"))
    def children_links(self, obj: Job) -> SafeString:
        children = obj.children.order_by("id")
        count = children.count()
        items = format_html_join(
            "",
            '<li><a href="{}">{}</a> {} <span class="hm-muted">{}</span></li>',
            (
                (job_url(c.pk), c.workflow_id, status_badge(c.status), c.name)
                for c in children[:MAX_CHILDREN]
            ),
        )
        more = ""
        if count > MAX_CHILDREN:
            more = format_html("<li>{} more…</li>", count - MAX_CHILDREN)
        return format_html('<ul class="hm-children">{}{}</ul>', items, more)

    @admin.display(description=_("continue-as-new"))
    def run_links(self, obj: Job) -> SafeString:
        return format_html_join(
            "",
            '<p>{} <a href="{}">{}</a></p>',
            ((label, job_url(pk), workflow_id) for label, pk, workflow_id in _runs(obj)),
        )

    @admin.display(description=_("tasks"))
    def human_task_links(self, obj: Job) -> SafeString:
        tasks = obj.human_tasks.order_by("step")[:MAX_CHILDREN]
        items = format_html_join(
            "",
            '<li><a href="{}">{} {}</a> {} <span class="hm-muted">{} {}</span></li>',
            (
                (
                    reverse("admin:hotmesh_django_humantask_change", args=[t.pk]),
                    _("task"),
                    t.pk,
                    status_badge(t.status, t.get_status_display()),
                    _("step %(step)d, role") % {"step": t.step},
                    t.role,
                )
                for t in tasks
            ),
        )
        return format_html('<ul class="hm-children">{}</ul>', items)

    # -- the detail page ----------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        job = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if job is not None:
            context.update(self.detail_context(request, job))
        return super().change_view(request, object_id, form_url, context)

    def detail_context(self, request: HttpRequest, job: Job) -> dict[str, Any]:
        """Return the panels of the detail page: operations, diagnosis, timeline, journal."""
        now = timezone.now()
        steps = list(Activity.objects.filter(job=job).order_by("seq")[: MAX_STEPS + 1])
        journal = list(Journal.objects.filter(job=job).order_by("id")[:MAX_JOURNAL_TIMELINE])
        child_urls = {s.child_id: job_url(s.child_id) for s in steps if s.child_id}
        can_operate = self.has_operate_permission(request)
        return {
            "hm_job": job,
            "hm_error": shown_error(job.error),
            "hm_can_operate": can_operate,
            "hm_active": job.status in ACTIVE_STATUSES,
            "hm_can_retry": job.status == JobStatus.FAILED,
            "hm_can_rerun": job.status in sources_of(JobStatus.READY) and bool(steps),
            "hm_reasons": diagnose(job, now) if job.status in ACTIVE_STATUSES else [],
            "hm_timeline": timeline.render(job, steps[:MAX_STEPS], journal, now, child_urls),
            "hm_journal": [(e, _data_text(e.data)) for e in journal[-MAX_JOURNAL:]],
            "hm_journal_cut": max(0, len(journal) - MAX_JOURNAL),
            "hm_steps_cut": len(steps) > MAX_STEPS,
            "hm_signal_form": SignalForm(),
            "hm_rerun_form": RerunForm(
                steps=[
                    (s.seq, f"{s.seq}. {s.name} ({s.get_status_display()})")
                    for s in steps[:MAX_STEPS]
                ]
            ),
        }


def _runs(job: Job) -> list[tuple[str, int, str]]:
    """Return (label, pk, workflow_id) of the runs before and after `job`.

    hm.continue_as_new renames the closed run to `<id>#run-<pk>` and starts the
    next under the workflow_id with a `previous_run` search attribute naming it;
    the GIN index on `search` finds the next run from the earlier one.
    """
    runs: list[tuple[str, int, str]] = []
    previous = (job.search or {}).get("previous_run")
    if isinstance(previous, str):
        pk = Job.objects.filter(workflow_id=previous).values_list("pk", flat=True).first()
        if pk is not None:
            runs.append((str(_("Continues the run")), pk, previous))
    following = (
        Job.objects.filter(search__contains={"previous_run": job.workflow_id})
        .values_list("pk", "workflow_id")
        .first()
    )
    if following is not None:
        runs.append((str(_("Continued as new in")), *following))
    return runs


def _without_tracebacks(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: "…" if k == "traceback" else _without_tracebacks(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_without_tracebacks(v) for v in data]
    return data


def _data_text(data: Any, limit: int = 600) -> str:
    """Return a journal entry's data as one line of JSON, secrets masked; tracebacks
    are on the job."""
    if data is None:
        return ""
    if isinstance(data, Unreadable):
        return str(_("Cannot decode this value: %(error)s") % {"error": data.error})
    text = json.dumps(redact(_without_tracebacks(data)), ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@admin.register(Activity)
class ActivityAdmin(WholeWorkflowIdSearch, ReadOnlyAdmin):
    list_display = (
        "job_link",
        "seq",
        "kind",
        "name",
        "status_badge",
        "attempts",
        "started",
        "finished",
    )
    list_filter = ("status", "kind")
    list_select_related = ("job",)
    search_fields = ("=job__workflow_id",)
    search_help_text = _("An exact workflow_id, typed whole.")
    ordering = ("-id",)
    sortable_by = ()

    @admin.display(description=_("job"))
    def job_link(self, obj: Activity) -> SafeString:
        return format_html('<a href="{}">{}</a>', job_url(obj.job_id), obj.job.workflow_id)

    @admin.display(description=_("status"))
    def status_badge(self, obj: Activity) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description=_("started"))
    def started(self, obj: Activity) -> str:
        return when(obj.started_at)

    @admin.display(description=_("finished"))
    def finished(self, obj: Activity) -> str:
        return when(obj.finished_at)


@admin.register(Journal)
class JournalAdmin(WholeWorkflowIdSearch, ReadOnlyAdmin):
    list_display = ("id", "job_link", "step", "event", "name", "attempt", "created")
    list_filter = ("event",)
    list_select_related = ("job",)
    search_fields = ("=job__workflow_id",)
    search_help_text = _("An exact workflow_id, typed whole.")
    ordering = ("-id",)
    sortable_by = ()

    @admin.display(description=_("job"))
    def job_link(self, obj: Journal) -> SafeString:
        return format_html('<a href="{}">{}</a>', job_url(obj.job_id), obj.job.workflow_id)

    @admin.display(description=_("created"))
    def created(self, obj: Journal) -> str:
        return when(obj.created_at, "Y-m-d H:i:s.u")[:23]


@admin.register(Stream)
class StreamAdmin(WholeWorkflowIdSearch, ReadOnlyAdmin):
    list_display = (
        "id",
        "queue",
        "kind",
        "job_link",
        "step",
        "name",
        "status",
        "priority",
        "visible",
        "attempts",
        "worker",
        "lease_until",
    )
    list_filter = ("status", "kind", QueueFilter)
    list_select_related = ("job",)
    search_fields = ("=job__workflow_id",)
    search_help_text = _("An exact workflow_id, typed whole.")
    ordering = ("-id",)
    sortable_by = ()

    @admin.display(description=_("job"))
    def job_link(self, obj: Stream) -> SafeString:
        return format_html('<a href="{}">{}</a>', job_url(obj.job_id), obj.job.workflow_id)

    @admin.display(description=_("visible at"))
    def visible(self, obj: Stream) -> str:
        return when(obj.visible_at)

    @admin.display(description=_("lease until"))
    def lease_until(self, obj: Stream) -> str:
        return when(obj.lease_expires_at)


@admin.register(Signal)
class SignalAdmin(WholeWorkflowIdSearch, ReadOnlyAdmin):
    list_display = ("id", "job_link", "name", "step", "created_at")
    list_select_related = ("job",)
    search_fields = ("=job__workflow_id",)
    search_help_text = _("An exact workflow_id, typed whole.")
    ordering = ("-id",)
    sortable_by = ()

    @admin.display(description=_("job"))
    def job_link(self, obj: Signal) -> SafeString:
        return format_html('<a href="{}">{}</a>', job_url(obj.job_id), obj.job.workflow_id)


@admin.register(Worker)
class WorkerAdmin(ReadOnlyAdmin):
    list_display = (
        "host",
        "pid",
        "liveness",
        "queue_list",
        "concurrency",
        "in_flight",
        "draining",
        "heartbeat",
        "started",
    )
    ordering = ("host", "pid")

    @admin.display(description=_("queues"))
    def queue_list(self, obj: Worker) -> str:
        queues = obj.queues or []
        return str(_("all")) if "*" in queues else ", ".join(str(q) for q in queues)

    @admin.display(description=_("started"))
    def started(self, obj: Worker) -> str:
        return when(obj.started_at)

    @admin.display(description=_("draining"), boolean=True, ordering="paused")
    def draining(self, obj: Worker) -> bool:
        """Stopping (SIGTERM, SIGUSR1): finishing what it holds, claiming nothing."""
        return obj.paused

    @admin.display(description=_("last heartbeat"), ordering="last_seen")
    def heartbeat(self, obj: Worker) -> str:
        ago = (timezone.now() - obj.last_seen).total_seconds()
        return str(_("%(when)s (%(ago)s ago)")) % {
            "when": when(obj.last_seen),
            "ago": timeline.human_duration(ago),
        }

    @admin.display(description=_("state"))
    def liveness(self, obj: Worker) -> SafeString:
        if is_live(obj, timezone.now()):
            return status_badge("alive", str(_("alive")))
        return status_badge("stale", str(_("stale")))


# Registered last: they build on the classes above.
from hotmesh_django import admin_schedules, admin_tasks  # noqa: E402, F401
