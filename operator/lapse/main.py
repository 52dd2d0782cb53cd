"""The operator's entry point: `lapse-operator` (and `make run`).

Importing the handler modules registers them with kopf; settings are read here, once.
"""

from __future__ import annotations

import asyncio

import kopf

from lapse import audit, crashpoints, logs
from lapse.config import Settings
from lapse.handlers import (  # noqa: F401  (registers the handlers)
    handle_activity,
    handle_admission,
    handle_bindings,
    handle_breakglass,
    handle_footholds,
    handle_requests,
    handle_roles,
    handle_startup,
)


def main() -> None:
    logs.configure()
    audit.configure()
    settings = Settings.from_env()
    crashpoints.arm(settings.crash_at)
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
