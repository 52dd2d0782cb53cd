"""The Lapse operator as a test subject: a subprocess (or the pods of an installation) with its
audit trail and metrics.

The code lives in `demo/harness.py` and `demo/pods.py`, because the demo runs the operator
exactly as the tests do and nothing outside `tests/` may import from `tests`; the end-to-end
and reliability fixtures keep importing it from here.
"""

from __future__ import annotations

from demo.harness import (
    IDENTITY_KINDS,
    OPERATOR_ACCOUNT,
    OPERATOR_NAMESPACE,
    OPERATOR_USER,
    ROOT,
    SWEEP_INTERVAL,
    Identity,
    Operator,
    free_port,
    parse_time,
    service_account_identity,
    wait_for,
)
from demo.pods import InClusterOperator, pod_identity

__all__ = [
    "IDENTITY_KINDS",
    "OPERATOR_ACCOUNT",
    "OPERATOR_NAMESPACE",
    "OPERATOR_USER",
    "ROOT",
    "SWEEP_INTERVAL",
    "Identity",
    "InClusterOperator",
    "Operator",
    "free_port",
    "parse_time",
    "pod_identity",
    "service_account_identity",
    "wait_for",
]
