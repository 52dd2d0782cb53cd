"""The operator's log: what a person on call reads, at the level it deserves.

kopf reports a webhook refusal (`kopf.AdmissionError`) as a handler that "failed permanently",
at ERROR; for Lapse a refusal is the webhook doing its job — someone asked for what policy does
not allow — so it is one INFO line saying what was refused and why. aiohttp's access log would
add a line for every admission call; the API server's own audit log is the place for those.
"""

from __future__ import annotations

import logging
import re
import sys

_REFUSAL = re.compile(r"^Webhook '(?P<webhook>[^']+)' failed permanently: (?P<why>.*)$", re.S)


class AdmissionRefusals(logging.Filter):
    """Turns kopf's ERROR for a webhook's refusal into one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or not isinstance(record.msg, str):
            return True
        found = _REFUSAL.match(record.getMessage())
        if found is None:
            return True
        record.msg = "Refused at admission (%s): %s"
        record.args = (found["webhook"], found["why"])
        record.levelno = logging.INFO
        record.levelname = logging.getLevelName(logging.INFO)
        return True


def configure() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kopf.objects").addFilter(AdmissionRefusals())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
