"""Who may talk to the page's server: its own page, with this run's token — nobody else.

The server holds the user's credentials, so each refusal here is an attack it stops: a
request without the token (another local user finding the port), a foreign Origin (a web
page in another tab approving through it), a foreign Host (DNS rebinding), a form post.
"""

from __future__ import annotations

import http.client
import json
from typing import Any

import yaml

from tests.cluster import Cluster
from tests.e2e.conftest import Team
from tests.e2e.ui.conftest import PageServer, People


def call(
    server: PageServer,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    host: str | None = None,
    first_chunk: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP request, headers exactly as given (Host included)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", f"127.0.0.1:{server.port}" if host is None else host)
    for key, value in (headers or {}).items():
        connection.putheader(key, value)
    if body is not None:
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    data = response.read1(65536) if first_chunk else response.read()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, data
    connection.close()
    return result


def approve_as(server: PageServer, team: Team, name: str, **headers: str) -> int:
    body = json.dumps(
        {"action": "approve", "kind": "AccessRequest", "namespace": team.namespace, "name": name}
    ).encode()
    status, _, _ = call(
        server, "POST", f"/{server.token}/api/act",
        headers={"Content-Type": "application/json", **headers}, body=body,
    )  # fmt: skip
    return status


def pending_request(people: People, name: str) -> None:
    team = people.team
    approval = {"approvers": {"groups": [people.leads]}, "required": 1}
    team.policy(roles=("edit",), mode="Approvers", suffix="-approvers", approval=approval)
    team.ask(name, duration="2m")
    team.wait_phase(name, "Pending")


def test_the_page_and_its_stream_answer_with_the_token_and_a_strict_policy(
    serve: Any, people: People
) -> None:
    team = people.team
    server = serve("alice", (team.group,), team.namespace)
    assert server.url.startswith("http://127.0.0.1:")
    status, headers, body = call(server, "GET", f"/{server.token}/")
    assert status == 200, body
    assert b"<title>Lapse</title>" in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["referrer-policy"] == "no-referrer"
    assert not [h for h in headers if h.startswith("access-control-")]
    status, headers, chunk = call(server, "GET", f"/{server.token}/api/stream", first_chunk=True)
    assert status == 200
    assert headers["content-type"].startswith("text/event-stream")
    assert headers["content-security-policy"]
    assert chunk.startswith(b"event: hello")
    assert b'"username": "alice"' in chunk


def test_without_this_runs_token_nothing_is_served(serve: Any, people: People) -> None:
    team = people.team
    server = serve("alice", (team.group,), team.namespace)
    other = "x" * len(server.token)
    for path in (
        "/", "/app.js", "/api/stream", "/api/offers", f"/{other}/", f"/{other}/api/stream",
        f"/{other}/app.js", f"/{server.token[:-1]}/api/offers", f"/api/stream?token={server.token}",
    ):  # fmt: skip
        status, headers, body = call(server, "GET", path)
        assert status == 403, (path, body)
        assert b"token" in body
        assert not [h for h in headers if h.startswith("access-control-")]


def test_a_foreign_origin_cannot_read_or_approve_through_the_approvers_page(
    serve: Any, people: People
) -> None:
    team = people.team
    pending_request(people, "csrf-target")
    server = serve("bob", (people.leads,), team.namespace)
    for origin in ("https://evil.example", "http://127.0.0.1:1", "null"):
        status, _, body = call(
            server, "GET", f"/{server.token}/api/offers", headers={"Origin": origin}
        )
        assert status == 403, body
        assert approve_as(server, team, "csrf-target", Origin=origin) == 403
    # A cross-site navigation or form post (the browser says so), and a post without Origin.
    assert approve_as(server, team, "csrf-target", **{"Sec-Fetch-Site": "cross-site"}) == 403
    assert approve_as(server, team, "csrf-target") == 403
    form = b"action=approve&kind=AccessRequest&name=csrf-target"
    status, _, _ = call(
        server, "POST", f"/{server.token}/api/act", body=form,
        headers={"Origin": f"http://127.0.0.1:{server.port}",
                 "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 403
    body = team.request("csrf-target")
    assert body["status"]["phase"] == "Pending"
    assert not body["status"].get("approvals")
    # The same click from the page itself is what approves.
    assert approve_as(server, team, "csrf-target", Origin=f"http://127.0.0.1:{server.port}") == 200
    team.wait_phase("csrf-target", "Active")


def test_a_foreign_host_is_refused_so_dns_rebinding_gets_nothing(
    serve: Any, people: People
) -> None:
    team = people.team
    server = serve("alice", (team.group,), team.namespace)
    for host in (
        f"evil.example:{server.port}", "evil.example", f"127.0.0.1:{server.port + 1}",
        f"localhost.evil.example:{server.port}", "",
    ):  # fmt: skip
        status, _, body = call(
            server, "GET", f"/{server.token}/api/stream", host=host, first_chunk=True
        )
        assert status == 403, (host, body)
    status, _, _ = call(server, "GET", f"/{server.token}/", host=f"localhost:{server.port}")
    assert status == 200


def test_the_kubeconfigs_credentials_never_reach_the_browser(
    cluster: Cluster, serve: Any, people: People
) -> None:
    team = people.team
    team.policy()
    team.ask("seen", duration="1m")
    team.wait_phase("seen", "Active")
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    secrets = [
        str(value)
        for user in config.get("users") or []
        for key, value in (user.get("user") or {}).items()
        if key in ("token", "client-key-data", "client-certificate-data", "password")
    ]
    assert secrets, "the test kubeconfig holds credentials"
    server = serve("alice", (team.group,), team.namespace)
    base = f"/{server.token}/"
    story = f"{base}api/story?kind=AccessRequest&namespace={team.namespace}&name=seen"
    seen = b""
    for path in (base, base + "app.js", base + "app.css", base + "api/offers", story):
        status, headers, body = call(server, "GET", path)
        assert status == 200, (path, body)
        seen += body + json.dumps(headers).encode()
    _, _, chunk = call(server, "GET", base + "api/stream", first_chunk=True)
    seen += chunk
    assert b"seen" in seen
    for secret in secrets:
        assert secret.encode() not in seen
        assert secret[:24].encode() not in seen


def test_the_page_adds_no_identity_of_its_own(serve: Any, people: People) -> None:
    """Whatever the page is sent, the request is made as the user who started it: fields
    naming someone else are not passed on, and the webhook stamps the requester."""
    team = people.team
    team.policy()
    server = serve("alice", (team.group,), team.namespace)
    body = json.dumps(
        {
            "role": "edit",
            "roleKind": "ClusterRole",
            "namespace": team.namespace,
            "duration": "1m",
            "reason": "Try to be someone else.",
            "subject": {"kind": "User", "name": "mallory"},
            "requester": {"username": "admin", "groups": ["system:masters"]},
            "as": "admin",
        }
    ).encode()
    status, _, answer = call(
        server, "POST", f"/{server.token}/api/request", body=body,
        headers={"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{server.port}",
                 "Impersonate-User": "admin", "Impersonate-Group": "system:masters"},
    )  # fmt: skip
    assert status == 200, answer
    name = json.loads(answer)["name"]
    granted = team.wait_phase(name, "Active")
    assert granted["spec"]["requester"]["username"] == "alice"
    assert granted["status"]["subject"] == {"kind": "User", "name": "alice"}
    # Nor may it act where alice may not: another namespace's request is the API's refusal.
    elsewhere = json.dumps({**json.loads(body), "namespace": "kube-system"}).encode()
    status, _, answer = call(
        server, "POST", f"/{server.token}/api/request", body=elsewhere,
        headers={"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{server.port}"},
    )  # fmt: skip
    assert status == 422
    assert b"forbidden" in answer.lower()
