"""The operator's entry point: `lapse-operator` (and `make run`).

Importing the handler modules registers them with kopf; settings are read here, once.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import kopf

from lapse import __version__, audit, crashpoints, heap, logs
from lapse.config import Settings
from lapse.handlers import (  # noqa: F401  (registers the handlers)
    handle_admission,
    handle_bindings,
    handle_breakglass,
    handle_footholds,
    handle_owners,
    handle_requests,
    handle_roles,
    handle_startup,
)


def main(argv: Sequence[str] | None = None) -> None:
    # Everything else is configured by LAPSE_* variables (config.py), as a Deployment sets them.
    parser = argparse.ArgumentParser(
        prog="lapse-operator",
        description="The Lapse operator; configured by LAPSE_* environment variables.",
    )
    parser.add_argument("--version", action="version", version=f"lapse-operator {__version__}")
    parser.parse_args(argv)
    logs.configure()
    audit.configure()
    settings = Settings.from_env()
    crashpoints.arm(settings.crash_at)
    heap.tune_collector()
    asyncio.run(
        kopf.operator(
            clusterwide=True,
            standalone=True,
            memo=kopf.Memo(settings=settings),
            liveness_endpoint=settings.liveness_endpoint or None,
        )
    )


if __name__ == "__main__":
    main()
