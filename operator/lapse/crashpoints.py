"""Test-only crash points: die at a named step, as a kill -9 there would.

Lapse claims that a crash at any step of a grant or a revocation converges after a restart.
Killing the process from outside at exactly "after the binding was written, before the status
was" is a race; naming the steps makes every one of them reachable on purpose. The point is
armed once from `LAPSE_CRASH_AT` (see `lapse.config`); unarmed, `crash_point` does nothing.
"""

from __future__ import annotations

import logging
import os
import sys

# Every step a crash test may name, in the order a grant and a revocation pass them.
POINTS = (
    "grant-before-binding-write",
    "grant-after-binding-write",
    "grant-before-status-write",
    "grant-after-status-write",
    "revoke-before-binding-write",
    "revoke-after-binding-write",
    "revoke-before-status-write",
    "revoke-after-status-write",
    "handover-after-successor-bound",
)
# The exit status of a process killed by SIGKILL, so the crash looks like one from outside.
EXIT_STATUS = 137

_armed: str | None = None


def arm(point: str | None) -> None:
    """Die at `point` from now on; None or "" disarms."""
    global _armed
    if point and point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}; one of {', '.join(POINTS)}")
    _armed = point or None


def crash_point(point: str) -> None:
    if _armed is None or point != _armed:
        return
    logging.getLogger(__name__).critical("Crash point %s reached: exiting at once.", point)
    sys.stderr.flush()
    sys.stdout.flush()
    # No cleanup, no finally blocks, no goodbye: exactly what SIGKILL leaves behind.
    os._exit(EXIT_STATUS)
