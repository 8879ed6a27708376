"""End to end in a real headless chromium: filter, open a failed job, retry, signal.

Driven by Playwright's Python package against Debian's chromium (never a browser
Playwright downloads). Screenshots land in tests/screenshots/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone

from hotmesh_django.models import Job, JobStatus, Worker
from tests.admin import defs
from tests.admin.factories import WorkerFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    for candidate in (
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
def browser_page(monkeypatch):
    executable = chromium_path()
    if executable is None:
        pytest.skip("chromium not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the test's own ORM
    # calls between browser steps are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=CHROMIUM_ARGS, headless=True
        )
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()
        # While Playwright's loop runs, Django's connections are per context: close
        # the ones this test opened there, then the fixtures' ones outside it.
        connections.close_all()
    connections.close_all()


def shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"admin-{name}.png"), full_page=True)


def test_operator_retries_and_signals_a_job_to_success(
    live_server, admin_user, drain, browser_page
) -> None:
    page = browser_page
    failing = defs.approval.using(workflow_id="order-1001", search={"customer": "acme"})
    handle = failing.start("order-1001", 2)
    defs.steps.using(workflow_id="report-7").start(3)
    defs.approval.using(workflow_id="order-1002").start("order-1002", 0)
    defs.failing.using(workflow_id="import-55").start("CSV row 17: bad date '2026-13-01'")
    drain()
    assert handle.status() == JobStatus.FAILED
    WorkerFactory(host="web-1", queues=["*"], concurrency=8, in_flight=2)
    WorkerFactory(
        host="web-2", queues=["default"], last_seen=timezone.now() - timezone.timedelta(minutes=10)
    )

    page.goto(f"{live_server.url}/admin/login/?next=/admin/hotmesh_django/job/")
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    shot(page, "1-job-list")

    page.click("#changelist-filter a[href*='status__exact=FAILED']")
    page.wait_for_url("**status__exact=FAILED**")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert page.locator("#result_list").inner_text().count("Failed") == 2
    shot(page, "2-failed-filter")

    page.click("#result_list a:text('order-1001')")
    page.wait_for_selector("#hm-operations")
    assert "flaky failure 2 of 2 for order-1001" in page.content()
    shot(page, "3-failed-detail")

    page.click("#hm-retry-form button")
    page.wait_for_selector(".messagelist")
    assert "1 job re-queued." in page.locator(".messagelist").inner_text()
    drain()
    page.reload()
    assert page.locator(".hm-summary .hm-badge").inner_text() == "Waiting"
    assert "Waiting for signal approved" in page.locator("#hm-why").inner_text()
    shot(page, "4-waiting-detail")

    page.fill("#hm-signal-form input[name=name]", "approved")
    page.fill("#hm-signal-form textarea[name=payload]", "{oops")
    page.click("#hm-signal-form button")
    page.wait_for_selector(".errorlist")
    assert "The payload is not valid JSON" in page.locator(".errorlist").inner_text()
    shot(page, "5-signal-form-error")
    page.fill("textarea[name=payload]", '{"approved_by": "ops"}')
    page.click("input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "1 job sent signal approved." in page.locator(".messagelist").inner_text()
    drain()
    page.reload()
    assert page.locator(".hm-summary .hm-badge").inner_text() == "Successful"
    assert Job.objects.get(workflow_id="order-1001").output == {
        "receipt": "ok after 3 calls",
        "decision": {"approved_by": "ops"},
    }
    shot(page, "6-successful-detail")

    page.goto(f"{live_server.url}/admin/hotmesh_django/job/")
    for workflow_id in ("order-1002", "import-55"):
        page.locator("#result_list tr", has_text=workflow_id).locator("input.action-select").check()
    page.select_option("select[name=action]", "send_signal")
    page.click("button[name=index]")
    page.wait_for_selector("textarea[name=payload]")
    shot(page, "7-bulk-signal-form")
    page.fill("input[name=name]", "approved")
    page.fill("textarea[name=payload]", "true")
    page.click("input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert (
        "1 job sent signal approved; 1 skipped (finished: FAILED)."
        in page.locator(".messagelist").inner_text()
    )

    Worker.objects.filter(host="web-1").update(last_seen=timezone.now())  # a fresh beat
    page.goto(f"{live_server.url}/admin/hotmesh_django/job/queues/")
    page.wait_for_selector("#hm-queue-table")
    assert "none" not in page.locator("#hm-queue-table").inner_text()
    shot(page, "8-queues")
    page.goto(f"{live_server.url}/admin/hotmesh_django/worker/")
    page.wait_for_selector("#result_list")
    listing = page.locator("#result_list").inner_text()
    assert "alive" in listing and "stale" in listing
    shot(page, "9-workers")
    page.goto(f"{live_server.url}/admin/hotmesh_django/")
    shot(page, "10-app-index")
