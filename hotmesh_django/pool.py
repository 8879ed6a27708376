"""Run several worker processes and shut them down together.

Each process runs one `Worker` with its own connections, so a stuck or crashing
activity cannot take its siblings down. The parent only forks, forwards signals and
restarts a child that died on its own.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from django.db import connections

logger = logging.getLogger(__name__)


# What a pool's parent sends its children to make them drain. Not SIGTERM: when the
# whole process group is signalled (Ctrl-C in a terminal, `kill -TERM -PGID`, many
# supervisors) each child already has its SIGTERM, and a forwarded one would count
# as its second and kill it at once. The drain signal is not counted at all, so it
# may arrive before or after the group's SIGTERM (Python runs pending handlers in
# signal-number order: SIGUSR1 before SIGTERM).
DRAIN_SIGNAL = signal.SIGUSR1


def install_signal_handlers(on_first: Callable[[], None], on_second: Callable[[], None]) -> None:
    """Call `on_first` on the first SIGTERM/SIGINT, `on_second` on the next, then exit 1.

    DRAIN_SIGNAL calls `on_first` unless it was called already, and counts for
    nothing: only a second SIGTERM/SIGINT exits at once.
    """
    state = {"signals": 0, "draining": False}

    def drain(why: str) -> None:
        if not state["draining"]:
            state["draining"] = True
            logger.info("%s: finishing in-flight work (again to exit now)", why)
            on_first()

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == DRAIN_SIGNAL:
            drain("drain requested")
            return
        state["signals"] += 1
        if state["signals"] == 1:
            drain(f"signal={signum}")
        else:
            logger.warning("signal=%s again: exiting now", signum)
            on_second()
            os._exit(1)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    signal.signal(DRAIN_SIGNAL, handler)


# How often a child checks that its parent is still there.
PARENT_CHECK_SECONDS = 1.0


def _child(target: Callable[..., None], parent: int, **kwargs: Any) -> None:
    """Run `target` in a forked child that stops, gracefully, when its parent dies.

    A parent killed outright (SIGKILL, an OOM kill) cannot forward anything, and its
    children would go on claiming work with nobody left to stop them: each one
    watches for that and sends itself the drain signal the parent would have.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        logger.warning("worker pool parent pid=%s is gone: stopping", parent)
        os.kill(os.getpid(), DRAIN_SIGNAL)

    threading.Thread(target=watch, name="hotmesh-parent-watch", daemon=True).start()
    target(**kwargs)


def run_pool(processes: int, target: Callable[..., None], kwargs: dict[str, Any]) -> int:
    """Fork `processes` children running `target(**kwargs)`; return an exit code."""
    # Children must not share the parent's sockets to Postgres.
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    stopping = {"flag": False}
    children: dict[int, BaseProcess] = {}

    def spawn(slot: int) -> None:
        proc = ctx.Process(
            target=_child,
            args=(target, os.getpid()),
            kwargs=kwargs,
            name=f"hotmesh-worker-{slot}",
        )
        proc.start()
        children[slot] = proc

    def signal_children(signum: int) -> None:
        for proc in children.values():
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signum)

    def stop() -> None:
        stopping["flag"] = True
        signal_children(DRAIN_SIGNAL)

    install_signal_handlers(stop, lambda: signal_children(signal.SIGKILL))
    for slot in range(processes):
        spawn(slot)
    restarts = 0
    while True:
        alive = False
        for slot, proc in list(children.items()):
            proc.join(timeout=0.2)
            if proc.is_alive():
                alive = True
            elif not stopping["flag"] and proc.exitcode != 0:
                restarts += 1
                logger.warning("worker process died exitcode=%s; restarting", proc.exitcode)
                time.sleep(min(5.0, 0.5 * restarts))
                spawn(slot)
                alive = True
        if not alive:
            break
    return 0 if all(p.exitcode == 0 for p in children.values()) else 1
