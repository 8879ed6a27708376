from __future__ import annotations

import contextlib
import importlib

from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class HotmeshConfig(AppConfig):
    name = "hotmesh_django"
    verbose_name = _("HotMesh workflows")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Definitions register themselves on import, so every process that might
        # start or run them (web, shell, worker) sees the same registry.
        from hotmesh_django import (
            checks,  # noqa: F401 - registers the system checks
            tasks,  # noqa: F401 - registers the TASKS backend's activity
        )
        from hotmesh_django.conf import IMPORT_ERRORS, settings

        autodiscover_modules("activities", "workflows")
        for module in settings.imports:
            # A module that fails to import is reported by the hotmesh.E005 check.
            with contextlib.suppress(*IMPORT_ERRORS):
                importlib.import_module(module)
