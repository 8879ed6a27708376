"""Sample activities for the demo shop: plain functions made durable.

Some of them are flaky on purpose, like a payment gateway with transient outages,
so the demo shows retries: each call fails with probability `rate`, but a worker
process fails a given call at most once, so with fewer worker processes than
`max_attempts` every call succeeds by its last attempt.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from typing import Any

from hotmesh_django import RetryPolicy, activity


class TransientError(RuntimeError):
    """A simulated outage of an external service: worth retrying."""


# Short intervals so the demo shows retries without waiting long.
QUICK = RetryPolicy(max_attempts=4, initial_interval=0.2, backoff=2.0, max_interval=1.0)
FLAKY = RetryPolicy(max_attempts=6, initial_interval=0.2, backoff=2.0, max_interval=1.0)

_rng = random.Random()  # noqa: S311 - simulated faults, not secrets
_failed_here: Counter[str] = Counter()
_lock = threading.Lock()


def maybe_fail(key: str, rate: float, what: str) -> None:
    """Raise TransientError with probability `rate`, at most once per key per process."""
    with _lock:
        if _failed_here[key] or _rng.random() >= rate:
            return
        _failed_here[key] += 1
    raise TransientError(f"{what}: upstream timed out (simulated), will retry")


def _work(low: float = 0.01, high: float = 0.05) -> None:
    """Pretend to do some I/O."""
    time.sleep(_rng.uniform(low, high))


def _token(*parts: object) -> str:
    return hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:12]


@activity(name="shop.reserve_stock", retry=QUICK, timeout=10)
def reserve_stock(order_id: int, items: int) -> dict[str, Any]:
    """Reserve `items` units for the order in the warehouse."""
    _work()
    return {"reservation": f"R-{order_id}-{_token('stock', order_id)[:6]}", "items": items}


@activity(name="shop.charge_card", retry=FLAKY, timeout=10)
def charge_card(order_id: int, cents: int) -> str:
    """Charge the customer's card; the gateway times out about 30 % of the time."""
    maybe_fail(f"charge:{order_id}:{cents}", 0.3, f"charge order {order_id}")
    _work()
    return f"ch_{_token('charge', order_id, cents)}"


@activity(name="shop.refund", retry=QUICK, timeout=10)
def refund(order_id: int, receipt: str) -> str:
    """Refund a charge (the compensation when an order is not approved)."""
    _work()
    return f"re_{_token('refund', order_id, receipt)}"


@activity(name="shop.notify", queue="notifications", retry=QUICK, timeout=10)
def notify(order_id: int, channel: str) -> str:
    """Tell a back-office channel (warehouse, accounting, ...) about the order."""
    maybe_fail(f"notify:{order_id}:{channel}", 0.1, f"notify {channel}")
    _work()
    return f"{channel}:ok"


@activity(name="shop.send_email", queue="emails", retry=QUICK, timeout=10)
def send_email(to: str, subject: str) -> str:
    """Send an email and return its message id."""
    _work()
    return f"<{_token('email', to, subject)}@shop.example>"


@activity(name="shop.ship", retry=QUICK, timeout=10)
def ship(order_id: int, approved_by: str) -> str:
    """Hand the parcel to the carrier and return its tracking number."""
    _work()
    return f"TRK{_token('ship', order_id, approved_by)[:10].upper()}"


@activity(name="shop.resize_image", queue="images", retry=FLAKY, timeout=10)
def resize_image(image: str, width: int) -> dict[str, Any]:
    """Make a thumbnail of `image` (started on its own as a standalone job)."""
    maybe_fail(f"resize:{image}:{width}", 0.3, f"resize {image}")
    _work(0.02, 0.1)
    height = width * 3 // 4
    return {"image": image, "thumbnail": f"{image.rsplit('.', 1)[0]}-{width}x{height}.webp"}
