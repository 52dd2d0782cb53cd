"""`make ready`: wait until the operator that `make run &` started answers.

Lapse learns who asks from its admission webhooks, so a request created before they are
registered and serving is not stamped and ends Invalid. A script (or a fast typist) waits here:
a server-side dry run of a request goes through the webhooks and changes nothing, and comes
back stamped with the caller's identity once Lapse is ready.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from demo.harness import kubectl_binary

WAIT_SECONDS = 90.0
PROBE = {
    "apiVersion": "lapse.dev/v1alpha1",
    "kind": "AccessRequest",
    "metadata": {"name": "lapse-ready-probe"},
    "spec": {"role": {"kind": "ClusterRole", "name": "view"}, "reason": "Readiness probe."},
}


def stamped(namespace: str) -> tuple[bool, str]:
    done = subprocess.run(
        [kubectl_binary(), "create", "--dry-run=server", "-n", namespace, "-o", "json", "-f", "-"],
        input=json.dumps(PROBE),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return False, done.stderr.strip()
    requester = (json.loads(done.stdout).get("spec") or {}).get("requester")
    return bool(requester), "the webhooks are not registered yet"


def main() -> int:
    namespace = os.environ.get("LAPSE_NAMESPACE", "lapse-system")
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        ready, why = stamped(namespace)
        if ready:
            print("Lapse is ready.")
            return 0
        if time.monotonic() >= deadline:
            print(f"Lapse did not become ready within {WAIT_SECONDS:g}s: {why}", file=sys.stderr)
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
