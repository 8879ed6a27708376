"""The demo's order pipeline: a durable workflow over the shop's activities."""

from __future__ import annotations

from typing import Any

import hotmesh_django as hm
from demo_project.shop.activities import (
    charge_card,
    notify,
    refund,
    reserve_stock,
    send_email,
    ship,
)

CHANNELS = ("warehouse", "accounting", "crm")
APPROVAL_SIGNAL = "approved"


@hm.workflow(name="shop.order_pipeline", queue="orders", timeout=600)
def order_pipeline(order_id: int, cents: int, customer: str = "guest") -> dict[str, Any]:
    """Reserve, charge, notify, cool off, wait for approval, then ship.

    Every call below is a durable step: after a crash the function re-runs from the
    top and finished steps return their journaled results without running again.
    """
    hm.set_search(customer=customer, order_id=order_id)
    reservation = reserve_stock(order_id, items=1 + order_id % 3)
    receipt = charge_card(order_id, cents)  # flaky: its retries show in the journal
    # Fan-out / fan-in: three steps at once, results in order.
    # (.start() inside a workflow returns a StepHandle; its annotation says JobHandle too.)
    notified = hm.gather(*[notify.start(order_id, c) for c in CHANNELS])
    hm.sleep(1)  # a durable timer: survives worker restarts
    try:
        approval = hm.wait_for_signal(APPROVAL_SIGNAL, timeout=60)
    except hm.SignalTimeout:
        # Compensate: nobody approved the order in time.
        return {
            "order_id": order_id,
            "status": "not approved",
            "receipt": receipt,
            "refund": refund(order_id, receipt),
        }
    approved_by = str(approval.get("by", "unknown")) if isinstance(approval, dict) else "unknown"
    tracking = ship(order_id, approved_by)
    email = send_email(customer, f"Order {order_id} shipped: {tracking}")
    return {
        "order_id": order_id,
        "status": "shipped",
        "customer": customer,
        "cents": cents,
        "reservation": reservation["reservation"],
        "receipt": receipt,
        "notified": notified,
        "approved_by": approved_by,
        "tracking": tracking,
        "email": email,
    }
