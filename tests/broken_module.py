"""A module whose own code fails at import, for the import error paths."""

from __future__ import annotations

raise RuntimeError("broken on purpose")
