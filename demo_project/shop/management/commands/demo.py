"""`manage.py demo`: run sample workflows through a worker pool, then serve the admin.

    python manage.py demo [--orders 20] [--jobs 50] [--workers 2] [--concurrency 4]
                          [--timeout 120] [--no-serve] [--port 8000]

Starts `--orders` order pipelines (flaky charge, fan-out, durable sleep, a signal the
demo sends) and `--jobs` standalone image jobs, launches
`manage.py hotmesh_worker` as a subprocess, shows a progress bar until every job has
finished, prints a summary, stops the pool with SIGTERM and serves the admin with a
ready login.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import hotmesh_django as hm
from demo_project.shop.activities import resize_image
from demo_project.shop.workflows import APPROVAL_SIGNAL, order_pipeline
from hotmesh_django.choices import FINISHED_STATUSES, JobStatus, JournalEvent, StepKind
from hotmesh_django.models import Activity, Job, Journal
from hotmesh_django.serialization import from_json

ROOT = Path(__file__).resolve().parents[4]


def _check_port_free(port: int) -> None:
    """Refuse a busy port before the demo runs, not after it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise CommandError(
                f"Port {port} on 127.0.0.1 is in use: give another with --port "
                f"(make demo DEMO_ARGS='--port 8001'), or --no-serve."
            ) from None


ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"  # noqa: S105 - a local demo login, printed on purpose
POLL_SECONDS = 0.2
GRACEFUL_SECONDS = 10.0
CUSTOMERS = ("ada", "grace", "linus", "guido", "barbara", "ken", "margaret", "dennis")
IMAGES = ("hero.png", "avatar.jpg", "banner.png", "product.jpg", "logo.png")
WIDTHS = (160, 320, 640, 1280)
STATUS_STYLE = {
    JobStatus.SUCCESSFUL: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
    JobStatus.RUNNING: "cyan",
    JobStatus.WAITING: "magenta",
    JobStatus.READY: "blue",
}


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {number}")
        return number

    parse.__name__ = "integer"
    return parse


def port_number(value: str) -> int:
    number = _int_at_least(1)(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, not {number}")
    return number


def positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than zero seconds, not {value}")
    return number


@dataclass
class Run:
    """What this demo run started and saw."""

    prefix: str
    orders: list[str]
    jobs: list[str]
    approved: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    worker_exit: int | None = None

    @property
    def total(self) -> int:
        return len(self.orders) + len(self.jobs)

    @property
    def finished(self) -> int:
        return sum(self.counts.get(s, 0) for s in FINISHED_STATUSES)

    def job_rows(self) -> Any:
        return Job.objects.filter(workflow_id__startswith=self.prefix)


class Command(BaseCommand):
    help = (
        "Run sample order workflows and image jobs through a worker pool with a progress "
        "bar, print a summary, then serve the admin with a ready login."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--orders",
            type=_int_at_least(0),
            default=20,
            help="Order workflows to start (default 20).",
        )
        parser.add_argument(
            "--jobs",
            type=_int_at_least(0),
            default=50,
            help="Standalone image jobs to start (default 50).",
        )
        parser.add_argument(
            "--workers", type=_int_at_least(1), default=2, help="Worker processes (default 2)."
        )
        parser.add_argument(
            "--concurrency",
            type=_int_at_least(1),
            default=4,
            help="Runner threads per worker process (default 4).",
        )
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            default=120.0,
            help="Seconds to wait for every job to finish (default 120).",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Exit after the summary instead of serving the admin.",
        )
        parser.add_argument(
            "--port", type=port_number, default=8000, help="Port for the admin (default 8000)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        console = Console()
        if options["orders"] + options["jobs"] == 0:
            raise CommandError("Nothing to do: give --orders or --jobs more than 0.")
        if not options["no_serve"]:
            _check_port_free(options["port"])  # before the run, not after it
        settings_db = connections["default"].settings_dict
        console.print(
            f"Database: [bold]{settings_db['NAME']}[/] on "
            f"{settings_db['HOST'] or 'localhost'}"
            + ("" if os.environ.get("DATABASE_URL") else " (embedded PostgreSQL, .pgdata/)")
        )
        self._connect(console, settings_db)
        self._migrate(console)
        self._login_line = self._ensure_admin()
        console.print(f"[bold]Admin login:[/] {self._login_line}")
        run = self._start(options["orders"], options["jobs"])
        console.print(
            f"Started [bold]{len(run.orders)}[/] order workflows and [bold]{len(run.jobs)}[/] "
            f"image jobs (workflow ids [cyan]{run.prefix}*[/])."
        )
        log_path = Path(tempfile.mkstemp(prefix="hotmesh-demo-worker-", suffix=".log")[1])
        console.print(
            f"Starting {options['workers']} worker process(es) x {options['concurrency']} "
            "threads: manage.py hotmesh_worker"
        )
        console.print(f"Worker log: {log_path}", soft_wrap=True)
        started = time.monotonic()
        worker = self._spawn_worker(options["workers"], options["concurrency"], log_path)
        try:
            self._watch(console, run, worker, options["timeout"])
        finally:
            run.elapsed = time.monotonic() - started
            console.print("Stopping the worker pool (SIGTERM)...")
            exit_code = self._stop_worker(worker)
            if run.worker_exit is None:
                run.worker_exit = exit_code
        ok = self._summary(console, run, log_path)
        if ok:
            log_path.unlink(missing_ok=True)
        if options["no_serve"]:
            if not ok:
                raise CommandError("The demo did not finish cleanly; see above.")
            return
        self._serve(console, options["port"], ok)

    # -- setup ---------------------------------------------------------------------------

    def _migrate(self, console: Console) -> None:
        connection = connections[DEFAULT_DB_ALIAS]
        executor = MigrationExecutor(connection)
        if executor.migration_plan(executor.loader.graph.leaf_nodes()):
            console.print("Applying migrations...")
            call_command("migrate", interactive=False, verbosity=0)

    def _connect(self, console: Console, settings_db: dict[str, Any]) -> None:
        """Reach the database, creating it when the server says it does not exist
        (a DATABASE_URL naming a new database); anything else is a clear error."""
        try:
            connections["default"].ensure_connection()
            return
        except OperationalError as exc:
            if "does not exist" not in str(exc):
                raise CommandError(f"Cannot reach the database: {exc}") from None
        from demo_project.embedded_pg import ensure_database

        ensure_database(
            {
                "host": settings_db["HOST"],
                "port": settings_db["PORT"],
                "user": settings_db["USER"],
                "password": settings_db["PASSWORD"],
                "dbname": settings_db["NAME"],
            }
        )
        console.print(f"Created database [bold]{settings_db['NAME']}[/].")

    def _ensure_admin(self) -> str:
        """Create the demo's superuser if there is none; return the login line.

        An existing `admin` user is left as it is: DATABASE_URL may name a database
        that is not the demo's own, and its admin's password is not ours to reset.
        """
        user_model = get_user_model()
        if user_model.objects.filter(username=ADMIN_USER).exists():
            return (
                f"user [bold cyan]{ADMIN_USER}[/] already exists in this database; "
                "its password was left as it is"
            )
        user_model.objects.create_superuser(ADMIN_USER, "admin@example.com", ADMIN_PASSWORD)
        return f"user [bold cyan]{ADMIN_USER}[/] password [bold cyan]{ADMIN_PASSWORD}[/]"

    def _start(self, orders: int, jobs: int) -> Run:
        prefix = f"demo-{uuid.uuid4().hex[:6]}-"
        rng = random.Random(prefix)  # noqa: S311 - sample data
        run = Run(prefix=prefix, orders=[], jobs=[])
        with transaction.atomic():  # one commit: all or nothing
            for i in range(1, orders + 1):
                wid = f"{prefix}order-{i:03d}"
                customer = CUSTOMERS[i % len(CUSTOMERS)]
                order_pipeline.using(workflow_id=wid).start(i, rng.randrange(500, 50_000), customer)
                run.orders.append(wid)
            for i in range(1, jobs + 1):
                wid = f"{prefix}image-{i:03d}"
                image = f"{i:03d}-{IMAGES[i % len(IMAGES)]}"
                resize_image.using(workflow_id=wid, search={"image": image}).start(
                    image, WIDTHS[i % len(WIDTHS)]
                )
                run.jobs.append(wid)
        return run

    def _spawn_worker(
        self, processes: int, concurrency: int, log_path: Path
    ) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            str(ROOT / "manage.py"),
            "hotmesh_worker",
            "--processes",
            str(processes),
            "--concurrency",
            str(concurrency),
            "--graceful-timeout",
            str(GRACEFUL_SECONDS),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        connections.close_all()  # nothing of ours leaks into the child
        with log_path.open("wb") as log:
            # Its own session: a Ctrl-C here does not hit the pool twice; we stop it.
            return subprocess.Popen(  # noqa: S603 - our own interpreter and manage.py
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    # -- the run -------------------------------------------------------------------------

    def _watch(
        self, console: Console, run: Run, worker: subprocess.Popen[bytes], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
        )
        with progress:
            jobs_bar = progress.add_task("jobs finished", total=run.total, detail="")
            signal_bar: TaskID | None = None
            if run.orders:
                signal_bar = progress.add_task("orders approved", total=len(run.orders), detail="")
            while True:
                run.counts = self._counts(run)
                if signal_bar is not None:
                    self._approve_waiting(progress, run)
                    progress.update(signal_bar, completed=len(run.approved))
                progress.update(jobs_bar, completed=run.finished, detail=self._detail(run))
                if run.finished >= run.total:
                    break
                if worker.poll() is not None:
                    run.worker_exit = worker.returncode
                    progress.console.print(
                        f"[red]The worker pool exited early (code {worker.returncode}).[/]"
                    )
                    break
                if time.monotonic() > deadline:
                    progress.console.print(f"[red]Timed out after {timeout:g} s.[/]")
                    break
                time.sleep(POLL_SECONDS)

    def _counts(self, run: Run) -> dict[str, int]:
        rows = run.job_rows().values_list("status").annotate(n=Count("id")).order_by()
        return dict(rows)

    def _detail(self, run: Run) -> str:
        active = [
            f"{status.lower()} {run.counts[status]}"
            for status in (JobStatus.READY, JobStatus.RUNNING, JobStatus.WAITING)
            if run.counts.get(status)
        ]
        return " · ".join(active)

    def _approve_waiting(self, progress: Progress, run: Run) -> None:
        """Send the approval signal to every order that is now waiting for it."""
        pending = [wid for wid in run.orders if wid not in run.approved]
        if not pending:
            return
        waiting = Activity.objects.filter(
            job__workflow_id__in=pending,
            kind=StepKind.SIGNAL,
            name=APPROVAL_SIGNAL,
            status=JobStatus.WAITING,
        ).values_list("job__workflow_id", flat=True)
        for wid in sorted(set(waiting)):
            # A job that gave up waiting in the meantime shows in the summary.
            with contextlib.suppress(hm.JobFinishedError):
                hm.signal(wid, APPROVAL_SIGNAL, {"by": "demo", "at": time.time()})
            run.approved.add(wid)
            if len(run.approved) <= 3:
                progress.console.print(
                    f"  [magenta]signal[/] {APPROVAL_SIGNAL!r} -> {wid} (it was waiting for it)"
                )
            elif len(run.approved) == 4:
                progress.console.print("  [magenta]signal[/] ... (the rest on the bar below)")

    def _stop_worker(self, worker: subprocess.Popen[bytes]) -> int:
        if worker.poll() is not None:
            return worker.returncode
        # The pool's parent forwards SIGTERM to its children (signalling the whole
        # group would deliver two, and a second SIGTERM means "exit at once").
        worker.send_signal(signal.SIGTERM)
        try:
            return worker.wait(timeout=GRACEFUL_SECONDS + 5)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            return worker.wait(timeout=10)

    # -- reporting -----------------------------------------------------------------------

    def _summary(self, console: Console, run: Run, log_path: Path) -> bool:
        run.counts = self._counts(run)
        retries = Journal.objects.filter(
            job__workflow_id__startswith=run.prefix, event=JournalEvent.STEP_RETRIED
        ).count()
        steps = Activity.objects.filter(
            job__workflow_id__startswith=run.prefix, kind=StepKind.ACTIVITY
        ).count()

        by_status = Table(title="Jobs by status")
        by_status.add_column("status")
        by_status.add_column("jobs", justify="right")
        for status in JobStatus:
            if run.counts.get(status):
                style = STATUS_STYLE.get(status, "")
                by_status.add_row(f"[{style}]{status}[/]", str(run.counts[status]))
        by_status.add_row("[bold]total[/]", f"[bold]{sum(run.counts.values())}[/]")

        elapsed = max(run.elapsed, 1e-9)
        metrics = Table(title="Demo summary")
        metrics.add_column("metric")
        metrics.add_column("value", justify="right")
        metrics.add_row("order workflows", str(len(run.orders)))
        metrics.add_row("standalone image jobs", str(len(run.jobs)))
        metrics.add_row("activity steps run", str(steps))
        metrics.add_row("retries seen", str(retries))
        metrics.add_row("approval signals sent", str(len(run.approved)))
        metrics.add_row("elapsed", f"{run.elapsed:.2f} s")
        metrics.add_row("throughput", f"{run.finished / elapsed:.1f} jobs/s")
        console.print(by_status)
        console.print(metrics)

        if run.orders:
            output = (
                Job.objects.filter(workflow_id=run.orders[0], status=JobStatus.SUCCESSFUL)
                .values_list("output", flat=True)
                .first()
            )
            if output is not None:
                console.print(f"Result of {run.orders[0]}:", from_json(output))

        successful = run.counts.get(JobStatus.SUCCESSFUL, 0)
        ok = successful == run.total
        if ok:
            console.print(
                f"[bold green]All {run.total} jobs SUCCESSFUL[/] "
                f"(failed attempts retried: {retries})."
            )
        else:
            console.print(
                f"[bold red]{run.total - successful} of {run.total} jobs did not succeed.[/]"
            )
            self._report_problems(console, run)
            console.print(f"Worker log: {log_path}", soft_wrap=True)
        if run.worker_exit not in (0, None):
            console.print(f"[yellow]The worker pool exited with code {run.worker_exit}.[/]")
        return ok

    def _report_problems(self, console: Console, run: Run) -> None:
        table = Table(title="Jobs that did not succeed")
        table.add_column("workflow id")
        table.add_column("status")
        table.add_column("last event / error")
        rows = run.job_rows().exclude(status=JobStatus.SUCCESSFUL).order_by("workflow_id")
        for job in rows[:50]:
            last = Journal.objects.filter(job=job).order_by("-id").first()
            what = f"{last.event} {last.name}" if last is not None else ""
            if job.error:
                what = f"{job.error.get('type', '')}: {job.error.get('message', '')}"
            table.add_row(job.workflow_id, job.status, what)
        console.print(table)

    def _serve(self, console: Console, port: int, ok: bool) -> None:
        connections.close_all()
        url = f"http://127.0.0.1:{port}/admin/"
        if not ok:
            console.print("Serving the admin anyway, so you can inspect what went wrong.")
        jobs_url = f"{url}hotmesh_django/job/"
        console.print()
        console.print(f"[bold]Admin:[/] [link={url}]{url}[/link]", soft_wrap=True)
        console.print(f"[bold]Jobs:[/]  [link={jobs_url}]{jobs_url}[/link]", soft_wrap=True)
        console.print(f"[bold]Login:[/] {self._login_line}   (Ctrl-C to stop)\n")
        call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)
