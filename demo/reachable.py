"""`make install`'s first step: wait until the cluster KUBECONFIG names answers.

`make kubeapi &` followed at once by `make install` is the README's path; the local API needs a
moment to write its kubeconfig and listen. Without a cluster, say what to do in one sentence
rather than letting kubectl fail against localhost:8080.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from demo.harness import kubectl_binary

WAIT_SECONDS = 30.0


def main() -> int:
    named = os.environ.get("KUBECONFIG")
    if not named and not Path("~/.kube/config").expanduser().exists():
        print(
            "No cluster: KUBECONFIG is not set. Start the local API with `make kubeapi &` and "
            'run `eval "$(make -s env)"`, or set KUBECONFIG to a cluster where you are admin.',
            file=sys.stderr,
        )
        return 1
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        done = subprocess.run(
            [kubectl_binary(), "get", "--raw", "/version", "--request-timeout=5s"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return 0
        if time.monotonic() >= deadline:
            print(
                f"The cluster KUBECONFIG names ({named or '~/.kube/config'}) did not answer "
                f"within {WAIT_SECONDS:g}s: {done.stderr.strip()}",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
