"""The operator's entry point: `lapse-operator` (and `make run`).

Importing the handler modules registers them with kopf; settings are read here, once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import kopf

from lapse import __version__, audit, crashpoints, heap, logs, teardown
from lapse.config import ConfigError, Settings
from lapse.handlers import (  # noqa: F401  (registers the handlers)
    handle_admission,
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
    parser.add_argument(
        "command",
        nargs="?",
        choices=["run", "uninstall"],
        default="run",
        help="run the operator (the default), or uninstall's first step: stop the Deployment "
        "LAPSE_DEPLOYMENT and wait while its replicas end every grant",
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="uninstall: seconds to wait (120)"
    )
    args = parser.parse_args(argv)
    logs.configure()
    audit.configure()
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        # One line a person can act on, not a traceback.
        print(f"lapse-operator: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command == "uninstall":
        raise SystemExit(teardown.stop_deployment(settings, args.timeout))
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
