"""The audit trail's log half: one JSON line per transition on the `lapse.audit` logger.

Lines go to stdout with nothing around them, so a log shipper can parse each as one object;
operational logs stay on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("lapse.audit")


def configure() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def write(record: Mapping[str, Any]) -> None:
    logger.info(json.dumps(record, separators=(",", ":"), sort_keys=False))
