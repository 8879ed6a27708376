"""HOTMESH_CODEC across real worker processes: a wrong key, then the right one."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest
from django.conf import settings
from django.test import override_settings

from hotmesh_django.models import Job, JobStatus
from hotmesh_django.redaction import MASK
from hotmesh_django.testing import skip_time
from tests.conftest import WorkerProcess, wait_until
from tests.integration import codec_defs as d
from tests.integration.test_codec import KEY_WRONG, plaintext_hits, waiting_for_signal

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]
Spawn = Callable[..., WorkerProcess]

DEFS = ("--import", "tests.integration.codec_defs")


def test_a_wrong_key_worker_keeps_running_and_the_right_one_finishes_the_jobs(
    spawn_worker: Spawn,
) -> None:
    right_key = {"HOTMESH_TEST_CODEC": "1"}  # tests.settings: TEST_FERNET_KEY
    with override_settings(
        HOTMESH_CODEC="hotmesh_django.codecs.FernetCodec",
        HOTMESH_CODEC_KEYS=[settings.TEST_FERNET_KEY],
    ):
        handle = d.waits.start(d.SECRET)
        task = d.shout.start(d.SECRET)
        wrong = spawn_worker(*DEFS, env_extra={**right_key, "HOTMESH_CODEC_KEYS": KEY_WRONG})
        wait_until(lambda: "step put aside" in wrong.log() and "job put aside" in wrong.log())
        time.sleep(1.0)
        assert wrong.poll() is None, wrong.log()  # no crash, no restart loop
        wrong.send_signal(signal.SIGTERM)
        assert wrong.wait(timeout=30) == 0, wrong.log()
        assert "None of the HOTMESH_CODEC_KEYS decrypts this value" in wrong.log()
        assert not Job.objects.filter(status=JobStatus.FAILED).exists()

        right = spawn_worker(*DEFS, env_extra={**right_key, "HOTMESH_LOG_LEVEL": "DEBUG"})
        with skip_time():  # the put-aside jobs are looked at again at once
            wait_until(waiting_for_signal(handle))
            handle.signal("go", {"token": f"t-{d.MARK}"})
            assert handle.result(timeout=60)["got"] == {"token": f"t-{d.MARK}"}
            assert task.result(timeout=60)["echo"] == d.SECRET
        right.send_signal(signal.SIGTERM)
        assert right.wait(timeout=30) == 0
        assert plaintext_hits() == {}
    log = right.log()
    # The DEBUG lines show arguments and results, with secrets masked.
    assert "activity start" in log and "activity done" in log
    assert MASK in log
    assert f"pw-{d.MARK}" not in log and f"t-{d.MARK}" not in log
