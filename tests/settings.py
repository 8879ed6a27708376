"""Test settings: the demo settings with the test definitions and short timings."""

from __future__ import annotations

from demo_project.settings import *  # noqa: F403
from demo_project.settings import INSTALLED_APPS, env

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "demo_project.shop"] + ["tests"]
DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
HOTMESH_IMPORTS = ["tests.activities", "tests.workflows"]
HOTMESH_LEASE_SECONDS = env.float("HOTMESH_LEASE_SECONDS", default=2.0)
HOTMESH_HEARTBEAT_SECONDS = env.float("HOTMESH_HEARTBEAT_SECONDS", default=0.5)
HOTMESH_POLL_INTERVAL_SECONDS = env.float("HOTMESH_POLL_INTERVAL_SECONDS", default=0.2)
LOGGING = {"version": 1, "disable_existing_loggers": False}
