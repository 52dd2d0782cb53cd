"""`python -m kubeapi`: serve the local Kubernetes API until Ctrl-C or SIGTERM.

Writes an admin kubeconfig once listening and prints one readiness line, which the test
fixture and `make kubeapi` wait for.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import gc
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

import yaml
from aiohttp import web

from . import audit, tls
from .identity import UserInfo
from .server import Server


def read_token_file(path: Path) -> dict[str, UserInfo]:
    """The API server's static token file: token,user,uid,"group1,group2"."""
    tokens: dict[str, UserInfo] = {}
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if not row or row[0].startswith("#") or len(row) < 3:
                continue
            groups = tuple(g for g in (row[3].split(",") if len(row) > 3 else ()) if g)
            tokens[row[0].strip()] = UserInfo(row[1].strip(), groups, row[2].strip())
    return tokens


def _seconds(text: str) -> float:
    """`1s`, `500ms`, `2m` or plain seconds, as the API server's duration flags take them."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


def write_kubeconfig(path: Path, server: str, token: str, ca_pem: bytes | None) -> None:
    cluster: dict[str, str] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lapse-local", "cluster": cluster}],
        "users": [{"name": "lapse-admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": "lapse-local",
                "context": {
                    "cluster": "lapse-local",
                    "user": "lapse-admin",
                    "namespace": "default",
                },
            }
        ],
        "current-context": "lapse-local",
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    admin_token = secrets.token_hex(16)
    tokens = read_token_file(Path(args.token_file)) if args.token_file else {}
    # kubectl sends bearer tokens only over TLS; plain HTTP serves clients without tokens.
    certificates = None if args.plain_http else tls.generate(args.host)
    backends: list[audit.Backend] = []
    if args.audit_webhook_config_file:
        backends.append(
            audit.WebhookBackend(
                audit.WebhookTarget.load(Path(args.audit_webhook_config_file)),
                max_size=args.audit_webhook_batch_max_size,
                max_wait=_seconds(args.audit_webhook_batch_max_wait),
                buffer_size=args.audit_webhook_batch_buffer_size,
                initial_backoff=_seconds(args.audit_webhook_initial_backoff),
            )
        )
    if args.audit_log_path:
        backends.append(audit.LogBackend(Path(args.audit_log_path)))
    backend = audit.Backends(backends) if backends else None
    server = Server(
        admin_token=admin_token,
        tokens=tokens,
        history=args.history,
        root_ca=certificates.ca_pem.decode() if certificates else "",
        audit_policy=audit.Policy.load(Path(args.audit_policy_file))
        if args.audit_policy_file
        else None,
        audit_backend=backend,
    )
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    ssl_context = certificates.server_context() if certificates else None
    site = web.TCPSite(runner, args.host, args.port, shutdown_timeout=1.0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    scheme = "http" if args.plain_http else "https"
    url = f"{scheme}://{args.host}:{port}"
    server.address = f"{args.host}:{port}"
    if args.kubeconfig:
        write_kubeconfig(
            Path(args.kubeconfig), url, admin_token, certificates.ca_pem if certificates else None
        )
    print(f"kubeapi listening on {url}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeapi", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", help="write an admin kubeconfig here once listening")
    parser.add_argument("--token-file", help="extra users, in the API server's CSV format")
    parser.add_argument(
        "--history",
        type=int,
        default=100_000,
        help="watch events kept for resuming watches (older ones get 410)",
    )
    parser.add_argument(
        "--plain-http",
        action="store_true",
        help="serve plain HTTP (kubectl then sends no token: anonymous only)",
    )
    parser.add_argument("--audit-policy-file", help="an audit.k8s.io/v1 Policy")
    parser.add_argument(
        "--audit-webhook-config-file", help="a kubeconfig naming where audit events are POSTed"
    )
    parser.add_argument("--audit-log-path", help="a file the events are appended to, a line each")
    parser.add_argument("--audit-webhook-batch-max-size", type=int, default=400)
    parser.add_argument("--audit-webhook-batch-max-wait", default="30s")
    parser.add_argument("--audit-webhook-batch-buffer-size", type=int, default=10_000)
    parser.add_argument("--audit-webhook-initial-backoff", default="10s")
    parser.add_argument("--log-level", default=os.environ.get("KUBEAPI_LOG_LEVEL", "WARNING"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The store and the watch history live as long as the process: CPython's default thresholds
    # promote every request's transient objects to the oldest generation, whose collections
    # then traverse the whole store (pauses of a tenth of a second and more at 1,000 grants).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 10, 100)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
