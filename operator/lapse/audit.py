"""The audit trail's log half: one JSON line per transition on the `lapse.audit` logger.

Lines go to stdout with nothing around them, so a log shipper can parse each as one object;
operational logs stay on stderr. Every record passes through `write`, so whatever else must
hear of transitions (the notifier) subscribes here rather than being called from each of them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger("lapse.audit")
Subscriber = Callable[[Mapping[str, Any]], None]
_subscribers: list[Subscriber] = []


def configure() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def subscribe(subscriber: Subscriber) -> None:
    """Hand every later record to `subscriber`, which must return at once and not raise."""
    _subscribers.append(subscriber)


def unsubscribe(subscriber: Subscriber) -> None:
    if subscriber in _subscribers:
        _subscribers.remove(subscriber)


def write(record: Mapping[str, Any]) -> None:
    logger.info(json.dumps(record, separators=(",", ":"), sort_keys=False))
    for subscriber in list(_subscribers):
        try:
            subscriber(record)
        except Exception:
            # The audit line is written; a subscriber's failure must not undo a transition.
            logging.getLogger(__name__).exception("An audit subscriber failed.")
