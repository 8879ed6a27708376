"""Test settings: the demo settings with the test definitions and short timings."""

from __future__ import annotations

import os

from demo_project.settings import *  # noqa: F403
from demo_project.settings import INSTALLED_APPS, env

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "demo_project.shop"] + ["tests"]
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
HOTMESH_IMPORTS = ["tests.activities", "tests.workflows"]
HOTMESH_LEASE_SECONDS = env.float("HOTMESH_LEASE_SECONDS", default=2.0)
HOTMESH_HEARTBEAT_SECONDS = env.float("HOTMESH_HEARTBEAT_SECONDS", default=0.5)
HOTMESH_POLL_INTERVAL_SECONDS = env.float("HOTMESH_POLL_INTERVAL_SECONDS", default=0.2)
# Off unless a test's worker subprocess asks (the soak test).
HOTMESH_PRUNE_AFTER_SECONDS = env.float("HOTMESH_PRUNE_AFTER_SECONDS", default=None)
# Set by process tests that run worker subprocesses with middleware.
HOTMESH_MIDDLEWARE = env.list("HOTMESH_MIDDLEWARE", default=[])

# A test database of its own per test run, so parallel runs on one server (the
# embedded one is shared by every checkout process) cannot drop each other's.
DATABASES["default"]["TEST"] = {  # noqa: F405
    "NAME": env.str("HOTMESH_TEST_DATABASE", default=f"test_hotmesh_{os.getpid()}")
}

HOTMESH_QUEUES = {"limited": {"concurrency": 2}, "rated": {"rate": "5/s"}}
HOTMESH_QUEUES["tenants"] = {"key_concurrency": 1}

# HOTMESH_TEST_CODEC=1 runs the suite with every stored value encrypted (the codec
# tests turn it on themselves). The key is a test fixture, not a secret.
TEST_FERNET_KEY = "0q3Yc4nFh5y8KqkVJc1yE0y3cQ2Hn3vXb6oG8tG2ZkE="
if env.bool("HOTMESH_TEST_CODEC", default=False):
    HOTMESH_CODEC = "hotmesh_django.codecs.FernetCodec"
    HOTMESH_CODEC_KEYS = env.list("HOTMESH_CODEC_KEYS", default=[TEST_FERNET_KEY])
