"""Fixtures: in-process workers, worker subprocesses, and their environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

from hotmesh_django.worker import Worker

ROOT = Path(__file__).resolve().parent.parent


class InProcessWorker:
    """A Worker running on a thread of the test process."""

    def __init__(self, **kwargs: Any) -> None:
        self.worker = Worker(**kwargs)
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
        finally:
            connections.close_all()

    def start(self) -> InProcessWorker:
        self.thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def start_worker(transactional_db: None) -> Iterator[Callable[..., InProcessWorker]]:
    """Return a function that starts an in-process worker; all stop at teardown."""
    started: list[InProcessWorker] = []

    def start(**kwargs: Any) -> InProcessWorker:
        kwargs.setdefault("concurrency", 4)
        worker = InProcessWorker(**kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.thread.is_alive():
            worker.stop()


@pytest.fixture
def worker(start_worker: Callable[..., InProcessWorker]) -> InProcessWorker:
    """One in-process worker on every queue, running for the whole test."""
    return start_worker()


@pytest.fixture
def worker_env(transactional_db: None) -> dict[str, str]:
    """Environment for subprocesses that must use this test's database."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        HOTMESH_DATABASE_NAME=str(connection.settings_dict["NAME"]),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    return env


class WorkerProcess(subprocess.Popen[bytes]):
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def spawn_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Return a function that starts `manage.py hotmesh_worker ARGS` as a subprocess."""
    procs: list[WorkerProcess] = []

    def spawn(*args: str, env_extra: dict[str, str] | None = None) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(procs)}.log"
        with log_path.open("wb") as log:
            proc = WorkerProcess(
                [sys.executable, str(ROOT / "manage.py"), "hotmesh_worker", *args],
                env={**worker_env, **(env_extra or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        proc.log_path = log_path
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
