"""The sinks the operator's settings name, built once at start-up."""

from __future__ import annotations

from lapse.config import Settings
from lapse.sinks.base import Sink


def build_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    return sinks
