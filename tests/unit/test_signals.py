"""The worker's signal handling, in a child Python process (real signals)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

_SCRIPT = textwrap.dedent(
    """
    import os, signal, time
    from hotmesh_django.pool import DRAIN_SIGNAL, install_signal_handlers

    calls = []
    install_signal_handlers(lambda: calls.append("drain"), lambda: calls.append("exit"))
    both = {signal.SIGTERM, DRAIN_SIGNAL}
    signal.pthread_sigmask(signal.SIG_BLOCK, both)
    for name in SENT:
        os.kill(os.getpid(), getattr(signal, name))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, both)  # all pending handlers run now
    time.sleep(0.2)
    print(calls)
    """
)


@pytest.mark.parametrize(
    ("sent", "calls", "code"),
    [
        # A pool signalled as a group: the child's own SIGTERM and the parent's drain
        # arrive together, and Python runs SIGUSR1's handler first. One signal.
        (["SIGTERM", "SIGUSR1"], "['drain']", 0),
        (["SIGUSR1"], "['drain']", 0),
        (["SIGTERM"], "['drain']", 0),
    ],
)
def test_a_drain_request_never_counts_as_a_second_signal(
    sent: list[str], calls: str, code: int
) -> None:
    result = _run(sent, _SCRIPT)
    assert (result.returncode, result.stdout.strip()) == (code, calls), result.stderr


def test_a_second_terminating_signal_exits_at_once() -> None:
    script = _SCRIPT.replace(
        "time.sleep(0.2)", "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(0.2)"
    )
    result = _run(["SIGUSR1", "SIGTERM"], script)
    assert result.returncode == 1, result.stderr


def _run(sent: list[str], script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"SENT = {sent!r}\n{script}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
