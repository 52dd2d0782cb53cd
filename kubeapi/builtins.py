"""The built-in kinds the local API serves, as `ResourceInfo`s.

Only what Lapse, kopf and kubectl touch, plus a few common kinds so manifests that carry them
can be applied; all of them are plain stored objects (no kubelet, no controllers beyond
garbage collection and namespace deletion).
"""

from __future__ import annotations

from .resources import ResourceInfo

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)


def _r(
    group: str,
    version: str,
    kind: str,
    plural: str,
    namespaced: bool,
    short: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
    categories: tuple[str, ...] = (),
) -> ResourceInfo:
    return ResourceInfo(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        verbs=verbs,
        short_names=short,
        categories=categories,
        subresources=sub,
    )


RBAC = "rbac.authorization.k8s.io"

BUILTINS: tuple[ResourceInfo, ...] = (
    _r(
        "",
        "v1",
        "Namespace",
        "namespaces",
        False,
        ("ns",),
        ("status", "finalize"),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    _r("", "v1", "Event", "events", True, ("ev",)),
    _r("", "v1", "ServiceAccount", "serviceaccounts", True, ("sa",), ("token",)),
    _r("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    _r("", "v1", "Secret", "secrets", True),
    _r(
        "",
        "v1",
        "Pod",
        "pods",
        True,
        ("po",),
        ("status", "exec", "attach", "portforward"),
        categories=("all",),
    ),
    _r("", "v1", "Service", "services", True, ("svc",), ("status",), categories=("all",)),
    _r("", "v1", "Endpoints", "endpoints", True, ("ep",)),
    _r("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    _r(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        True,
        ("deploy",),
        ("status", "scale"),
        categories=("all",),
    ),
    # The other workload kinds: served as stored objects (no controller runs them), so that
    # what a grantee may create under a grant can be created here as on a real cluster.
    _r(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        True,
        ("sts",),
        ("status",),
        categories=("all",),
    ),
    _r("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("status",), categories=("all",)),
    _r("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("status",), categories=("all",)),
    _r("batch", "v1", "Job", "jobs", True, (), ("status",), categories=("all",)),
    _r("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ("status",), categories=("all",)),
    # Stored only (no eviction API): Lapse's installation ships one, and `kubectl apply -k`
    # must take it here as on a real cluster.
    _r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), ("status",)),
    _r("events.k8s.io", "v1", "Event", "events", True, ("ev",)),
    _r("coordination.k8s.io", "v1", "Lease", "leases", True),
    _r(RBAC, "v1", "Role", "roles", True),
    _r(RBAC, "v1", "RoleBinding", "rolebindings", True),
    _r(RBAC, "v1", "ClusterRole", "clusterroles", False),
    _r(RBAC, "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _r(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        ("crd", "crds"),
        ("status",),
        categories=("api-extensions",),
    ),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        False,
        categories=("api-extensions",),
    ),
    _r(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        False,
        categories=("api-extensions",),
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        False,
        verbs=CREATE_ONLY,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        False,
        verbs=CREATE_ONLY,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        True,
        verbs=CREATE_ONLY,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        False,
        verbs=CREATE_ONLY,
    ),
    _r(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        False,
        verbs=CREATE_ONLY,
    ),
)

# Kinds that are answered, never stored (reviews).
VIRTUAL = {
    ("authorization.k8s.io", "subjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "localsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
}

# Kinds whose objects carry metadata.generation (bumped when spec changes).
GENERATION = {
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
}
