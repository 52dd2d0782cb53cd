"""How fast the web page follows the cluster: a grant turning Active, and an expiry.

`python -m bench.ui` starts the local API and the operator (as `make bench` does), runs
`kubectl lapse ui` as a requester, opens the page in headless chromium (Debian's, through
Playwright) and asks for BENCH_UI_N short grants one after another. It records, on the same
wall clock:

- when a watch of its own sees each request Active in the API, and when the page first shows
  it Active (a MutationObserver in the page stamps the moment the row changes);
- the request's `status.expiresAt`, and when the page first shows it Expired.

Printed: **Active in the API → on screen**, and **expiry → Expired on screen** (the latter
includes Lapse's own revocation lag, the watch and the page). Not asserted by any test: a
figure from a shared machine is an observation, not a contract. Results: build/ui-bench.json.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import yaml
from kubernetes import watch

from bench.cluster import ROOT, LocalApi, Operator, stop_all

N = int(os.environ.get("BENCH_UI_N", "20"))
NAMESPACE = "bench-ui"
GROUP = "bench-ui-devs"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
BIN = ROOT / ".venv" / "bin"
# Stamps, in the page, the first moment each row shows each phase.
OBSERVER = """
() => {
  window.__seen = {};
  const look = () => {
    const t = Date.now();
    for (const row of document.querySelectorAll("tr[data-name]")) {
      const phase = row.querySelector("[data-phase]");
      if (!phase) continue;
      const seen = (window.__seen[row.dataset.name] ||= {});
      seen[phase.dataset.phase] ||= t;
    }
  };
  new MutationObserver(look).observe(document.getElementById("main"),
    { childList: true, subtree: true });
  look();
}
"""


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    rbac = "rbac.authorization.k8s.io/v1"
    docs += [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {
            "apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "bench-ui-edit"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
        },
        {
            "apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "bench-ui-requester"},
            "rules": [{"apiGroups": ["lapse.dev"], "resources": ["accessrequests"],
                       "verbs": ["create", "get", "list", "watch", "delete", "patch"]}],
        },
        {
            "apiVersion": rbac, "kind": "ClusterRoleBinding",
            "metadata": {"name": "bench-ui-requester"},
            "subjects": [{"kind": "Group", "name": GROUP, "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "bench-ui-requester"},
        },
    ]  # fmt: skip
    return docs


POLICY = {
    "apiVersion": "lapse.dev/v1alpha1",
    "kind": "AccessPolicy",
    "metadata": {"name": "bench-ui"},
    "spec": {
        "requesters": {"groups": [GROUP]},
        "roles": [{"kind": "ClusterRole", "name": "bench-ui-edit"}],
        "namespaces": [NAMESPACE],
        "defaultDuration": "1h",
        "maxDuration": "1h",
        "approval": {"mode": "Auto"},
    },
}


def kubectl(kubeconfig: Path, *args: str, data: Any = None, check: bool = True) -> str:
    result = subprocess.run(
        [str(BIN / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        input=json.dumps(data) if data is not None else None,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def request(name: str, duration: str) -> dict[str, Any]:
    return {
        "apiVersion": "lapse.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "role": {"kind": "ClusterRole", "name": "bench-ui-edit"},
            "duration": duration,
            "reason": "How fast the page follows.",
        },
    }


def ask(kubeconfig: Path, name: str, duration: str) -> None:
    kubectl(
        kubeconfig, "create", "-f", "-", "--as=alice", f"--as-group={GROUP}",
        data=request(name, duration),
    )  # fmt: skip


def follow(kubeconfig: Path, seen: dict[str, dict[str, float]], stop: threading.Event) -> None:
    """The API's side: the first arrival of each phase of each request at a watch."""
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    custom = kubernetes.client.CustomObjectsApi(api)
    while not stop.is_set():
        stream = watch.Watch().stream(
            custom.list_namespaced_custom_object, "lapse.dev", "v1alpha1", NAMESPACE,
            "accessrequests", timeout_seconds=5,
        )  # fmt: skip
        for event in stream:
            at = time.time()
            body = event["object"]
            phase = (body.get("status") or {}).get("phase")
            if phase:
                seen.setdefault(body["metadata"]["name"], {}).setdefault(phase, at)


def start_page(kubeconfig: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    process = subprocess.Popen(
        [str(BIN / "kubectl-lapse"), "ui", "--no-browser", "-n", NAMESPACE, "--as=alice",
         f"--as-group={GROUP}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"(http://127\.0\.0\.1:\d+/\S+/)", line)
        if found:
            return process, found.group(1)
    raise RuntimeError("kubectl lapse ui printed no URL")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def measure(workdir: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    api = LocalApi(workdir / "kubeapi")
    api.start()
    operator = Operator(workdir / "operator", api.kubeconfig)
    operator.start()
    operator.wait_metrics()
    for doc in manifests():
        kubectl(api.kubeconfig, "apply", "-f", "-", data=doc)
    kubectl(api.kubeconfig, "wait", "--for=condition=Established", "--all", "crd")
    kubectl(api.kubeconfig, "apply", "-f", "-", data=POLICY)
    # The operator's webhooks answer once it has registered them.
    for attempt in range(100):
        try:
            ask(api.kubeconfig, f"warm-{attempt}", "5s")
            break
        except RuntimeError:
            time.sleep(0.3)
    seen_api: dict[str, dict[str, float]] = {}
    stop = threading.Event()
    threading.Thread(target=follow, args=(api.kubeconfig, seen_api, stop), daemon=True).start()
    page_server, url = start_page(api.kubeconfig)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url + "#/mine")
            page.wait_for_selector("body[data-ready=true]")
            page.evaluate(OBSERVER)
            names = [f"ui-{i:03d}" for i in range(N)]
            for index, name in enumerate(names):
                ask(api.kubeconfig, name, f"{4 + index % 4}s")
                time.sleep(0.7)
            deadline = time.time() + 30
            while time.time() < deadline:
                seen_page = page.evaluate("() => window.__seen")
                if all("Expired" in seen_page.get(n, {}) for n in names):
                    break
                time.sleep(0.5)
            browser.close()
        listing = json.loads(
            kubectl(api.kubeconfig, "get", "accessrequests", "-n", NAMESPACE, "-o", "json")
        )
        expires = {
            item["metadata"]["name"]: stamp(item["status"]["expiresAt"])
            for item in listing["items"]
            if (item.get("status") or {}).get("expiresAt")
        }
    finally:
        stop.set()
        page_server.terminate()
        page_server.wait(10)
        operator.stop()
        api.stop()
    return {"names": names, "page": seen_page, "api": seen_api, "expires": expires}


def main() -> int:
    if not Path(CHROMIUM).exists():
        print(f"needs chromium at {CHROMIUM}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="lapse-bench-ui-"))
    try:
        raw = measure(workdir)
    finally:
        stop_all()
    shown: list[float] = []
    lapsed: list[float] = []
    lapsed_api: list[float] = []
    for name in raw["names"]:
        page = {k: v / 1000 for k, v in (raw["page"].get(name) or {}).items()}
        api = raw["api"].get(name) or {}
        if "Active" in page and "Active" in api:
            shown.append(page["Active"] - api["Active"])
        if "Expired" in page and "Expired" in api:
            lapsed_api.append(page["Expired"] - api["Expired"])
        if "Expired" in page and name in raw["expires"]:
            lapsed.append(page["Expired"] - raw["expires"][name])
    figures = {
        "active_in_api_to_screen_s": summary(shown) if shown else None,
        "expired_in_api_to_screen_s": summary(lapsed_api) if lapsed_api else None,
        "expiry_to_expired_on_screen_s": summary(lapsed) if lapsed else None,
        "samples": len(raw["names"]),
    }
    out = ROOT / "build" / "ui-bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({**figures, "raw": raw}, indent=2))
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
