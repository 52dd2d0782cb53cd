"""Session-wide test fixtures: the cluster under test and a fresh namespace per test.

The backend is chosen with `--cluster=local|kind|kubeconfig` or `LAPSE_TEST_CLUSTER`
(default `local`, the project's own API server). Tests marked `faults` or `localonly` need the
local API and are skipped on the others.

A kind or kubeconfig cluster outlives the run: `leftovers_removed` clears what a run killed
mid-way left on it before anything else is done there.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import kubernetes.client
import pytest
import yaml
from kubernetes.client.rest import ApiException

from lapse.config import Settings
from lapse.core.bindings import MANAGED_BY, MANAGED_BY_LABEL, MANAGED_SELECTOR
from lapse.core.kinds import ACCESS_POLICY, ACCESS_REQUEST, BREAK_GLASS, GROUP, VERSION
from tests.cluster import ROOT, AuditWebhook, Cluster, LocalServer, faults_client, server_of

BACKENDS = ("local", "kind", "kubeconfig")
# Every namespace the suites make, and every cluster-scoped object they make (policies,
# break-glasses, ClusterRoleBindings, webhook configurations' namespaces), is named `t-…`:
# that is how a later run tells the suites' objects from everyone else's.
TEST_PREFIX = "t-"
SAMPLES = ROOT / "deploy" / "samples"
# Whom the samples, the demo and every end-to-end test play.
SAMPLE_USER = "alice"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        choices=BACKENDS,
        default=None,
        help="where end-to-end tests run: the local API (default), kind, or $KUBECONFIG",
    )


def backend_of(config: pytest.Config) -> str:
    chosen = config.getoption("--cluster") or os.environ.get("LAPSE_TEST_CLUSTER") or "local"
    if chosen not in BACKENDS:
        raise pytest.UsageError(f"unknown cluster backend {chosen!r}; one of {BACKENDS}")
    return str(chosen)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backend = backend_of(config)
    if backend == "local":
        return
    skip = pytest.mark.skip(reason=f"needs the local Kubernetes API (backend is {backend})")
    for item in items:
        if item.get_closest_marker("faults") or item.get_closest_marker("localonly"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def audit_webhook(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AuditWebhook | None:
    """Where the cluster's API server sends its audit events to Lapse: made here for the local
    API; for another cluster, what its API server was configured with (LAPSE_TEST_AUDIT_*), or
    None when it sends none."""
    if backend_of(request.config) == "local":
        return AuditWebhook.make(tmp_path_factory.mktemp("audit-webhook"))
    return AuditWebhook.from_env(dict(os.environ))


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    audit_webhook: AuditWebhook | None,
) -> Iterator[Cluster]:
    backend = backend_of(request.config)
    cache = tmp_path_factory.mktemp("kubectl-cache")
    if backend == "local":
        workdir = tmp_path_factory.mktemp("kubeapi")
        assert audit_webhook is not None
        server = LocalServer(workdir, extra_args=audit_webhook.kubeapi_args(workdir))
        url = server.start()
        try:
            yield Cluster(
                "local", server.kubeconfig, url, cache, faults=faults_client(url, server.kubeconfig)
            )
        finally:
            server.stop()
    elif backend == "kind":
        kind_cluster = request.getfixturevalue("kind_cluster")
        kubeconfig = Path(kind_cluster.kubeconfig_path)
        yield Cluster("kind", kubeconfig, server_of(kubeconfig), cache)
    else:
        kubeconfig = Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser()
        yield Cluster("kubeconfig", kubeconfig, server_of(kubeconfig), cache)


@pytest.fixture(scope="session")
def leftovers_removed(cluster: Cluster) -> None:
    """What an earlier run left on a cluster that outlives it (kind, kubeconfig), removed
    before this run's operator starts. A run killed mid-way (kill -9, a CI timeout) leaves
    Lapse's webhook configurations, which fail closed, pointing at its dead operator: no
    AccessRequest or BreakGlass can be created until they go. It also leaves its tests'
    objects, and a policy or a binding among them would judge or grant in this run's tests.

    Only what the suites make is touched: `t-…` namespaces, policies, break-glasses and
    ClusterRoleBindings, the conformance tests' webhook configurations for `t-…` namespaces,
    the sample policies (`make install` and the demo apply them; they name alice, whom every
    test plays), the sample user's requests in the sample namespace, and the bindings Lapse
    made for any of those. The local API starts empty every session and needs none of this.
    """
    if cluster.backend != "local":
        Leftovers(cluster.api()).remove()


class Leftovers:
    """The objects a killed run of the suites left behind, found and deleted."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api
        self.admission = kubernetes.client.AdmissionregistrationV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        self.core = kubernetes.client.CoreV1Api(api)
        samples = [
            doc
            for path in sorted(SAMPLES.glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text())
            if doc
        ]
        self.sample_policies = {
            doc["metadata"]["name"] for doc in samples if doc["kind"] == ACCESS_POLICY.kind
        }
        self.sample_namespace = next(
            doc["metadata"]["name"] for doc in samples if doc["kind"] == "Namespace"
        )

    def remove(self) -> None:
        # Webhooks first: every write on a Lapse object below passes them.
        self.remove_webhook_configurations()
        owners = self.remove_grant_owners()
        self.remove_policies()
        self.remove_bindings(owners)
        self.remove_namespaces()

    def remove_webhook_configurations(self) -> None:
        """Lapse's (kopf gives both kinds the configured name), and those the conformance
        tests make for their own namespaces."""
        lapse = Settings().webhook_configuration
        for kind in ("mutating", "validating"):
            listing = getattr(self.admission, f"list_{kind}_webhook_configuration")()
            for item in self._items(listing):
                name = item["metadata"]["name"]
                if name == lapse or _selects_test_namespaces_only(item.get("webhooks") or []):
                    _absent(getattr(self.admission, f"delete_{kind}_webhook_configuration"), name)

    def remove_grant_owners(self) -> set[str]:
        """Delete the tests' AccessRequests and BreakGlasses; their uids. kopf's finalizer is
        taken off first: the operator that put it there is dead, and this run's should not
        begin by revoking the grants of a run that is over."""
        owners: set[str] = set()
        for request in self._custom_objects(ACCESS_REQUEST.plural):
            meta = request["metadata"]
            requester = ((request.get("spec") or {}).get("requester") or {}).get("username")
            if meta["namespace"].startswith(TEST_PREFIX) or (
                meta["namespace"] == self.sample_namespace and requester == SAMPLE_USER
            ):
                owners.add(meta["uid"])
                place = (meta["namespace"], ACCESS_REQUEST.plural, meta["name"])
                if meta.get("finalizers"):
                    _absent(
                        self.custom.patch_namespaced_custom_object,
                        GROUP, VERSION, *place, NO_FINALIZERS,
                    )  # fmt: skip
                _absent(self.custom.delete_namespaced_custom_object, GROUP, VERSION, *place)
        for glass in self._custom_objects(BREAK_GLASS.plural):
            meta = glass["metadata"]
            if meta["name"].startswith(TEST_PREFIX):
                owners.add(meta["uid"])
                if meta.get("finalizers"):
                    _absent(
                        self.custom.patch_cluster_custom_object,
                        GROUP, VERSION, BREAK_GLASS.plural, meta["name"], NO_FINALIZERS,
                    )  # fmt: skip
                _absent(
                    self.custom.delete_cluster_custom_object,
                    GROUP, VERSION, BREAK_GLASS.plural, meta["name"],
                )  # fmt: skip
        return owners

    def remove_policies(self) -> None:
        for policy in self._custom_objects(ACCESS_POLICY.plural):
            name = policy["metadata"]["name"]
            if name.startswith(TEST_PREFIX) or name in self.sample_policies:
                _absent(
                    self.custom.delete_cluster_custom_object,
                    GROUP, VERSION, ACCESS_POLICY.plural, name,
                )  # fmt: skip

    def remove_bindings(self, owners: set[str]) -> None:
        """The tests' own `t-…` ClusterRoleBindings, and every binding Lapse made for a test's
        request or break-glass. Garbage collection would take those once their owners are
        gone, but at a moment of its own: a test that first checks that nobody holds
        cluster-admin must not meet one."""
        for crb in self._items(self.rbac.list_cluster_role_binding()):
            name = crb["metadata"]["name"]
            if name.startswith(TEST_PREFIX) or _made_for_a_test(crb["metadata"], owners):
                _absent(self.rbac.delete_cluster_role_binding, name)
        managed = self.rbac.list_role_binding_for_all_namespaces(label_selector=MANAGED_SELECTOR)
        for rb in self._items(managed):
            meta = rb["metadata"]
            if meta["namespace"].startswith(TEST_PREFIX) or _made_for_a_test(meta, owners):
                _absent(self.rbac.delete_namespaced_role_binding, meta["name"], meta["namespace"])

    def remove_namespaces(self) -> None:
        """Not waited for: a new run's namespaces have new names, and a conformance test's
        namespace may be held by a finalizer of that test's own until someone removes it."""
        for item in self._items(self.core.list_namespace()):
            meta = item["metadata"]
            if meta["name"].startswith(TEST_PREFIX) and not meta.get("deletionTimestamp"):
                _absent(self.core.delete_namespace, meta["name"])

    def _items(self, listing: Any) -> list[dict[str, Any]]:
        plain: dict[str, Any] = self.api.sanitize_for_serialization(listing)  # type: ignore[no-untyped-call]
        return list(plain.get("items") or ())

    def _custom_objects(self, plural: str) -> list[dict[str, Any]]:
        """Every object of one of Lapse's kinds, in all namespaces; none while the kind is
        not served (a fresh cluster, before the CRDs are applied)."""
        try:
            listing = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        except ApiException as error:
            if error.status == 404:
                return []
            raise
        return list(cast(dict[str, Any], listing).get("items") or ())


NO_FINALIZERS = {"metadata": {"finalizers": None}}


def _selects_test_namespaces_only(webhooks: list[dict[str, Any]]) -> bool:
    names = [
        ((hook.get("namespaceSelector") or {}).get("matchLabels") or {}).get(
            "kubernetes.io/metadata.name", ""
        )
        for hook in webhooks
    ]
    return bool(names) and all(name.startswith(TEST_PREFIX) for name in names)


def _made_for_a_test(meta: dict[str, Any], owners: set[str]) -> bool:
    """A binding Lapse made (its label) for a test's request or break-glass: an owner removed
    just now, or a `t-…` break-glass gone before (its binding still waits for collection)."""
    if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return False
    return any(
        ref["uid"] in owners
        or (ref["kind"] == BREAK_GLASS.kind and ref["name"].startswith(TEST_PREFIX))
        for ref in meta.get("ownerReferences") or ()
    )


def _absent(call: Any, *args: Any) -> None:
    """A delete (or patch) of an object that may be gone already."""
    try:
        call(*args)
    except ApiException as error:
        if error.status != 404:
            raise


def _namespace_name(node_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].strip("-")
    return f"{TEST_PREFIX}{stem}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(
    cluster: Cluster, leftovers_removed: None, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = _namespace_name(request.node.name)
    core = kubernetes.client.CoreV1Api(cluster.api())
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
