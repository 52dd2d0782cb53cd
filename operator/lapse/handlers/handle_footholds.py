"""The foothold webhook: what a grantee makes under a grant, seen at admission.

It is called for every create of the kinds that can carry access past a grant (tokens, token
Secrets, pods and workloads, RBAC objects), by anyone, so it answers from memory: the index of
active grants by subject (lapse.index). A caller without a grant here is let through at once.
It fails open (failurePolicy Ignore) on purpose: a Lapse outage must never stop a cluster from
creating pods; what it would have recorded is then missing from the grant's record, which
SECURITY.md states. A connection into a pod by a grantee is the one case that reads: the pod
(the CONNECT carries only its options) and the RBAC index every replica keeps in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from lapse.core.footholds import (
    CLUSTER_SCOPED,
    CONNECTS,
    WATCHED,
    Connection,
    GranteeGrant,
    compute_caller_keys,
    compute_covering_grant,
    compute_foothold_verdict,
)
from lapse.footholds import FootholdNotRecorded
from lapse.handlers.bodies import plain
from lapse.handlers.leading import services_of
from lapse.registration import FOOTHOLD_HOOK_PREFIX
from lapse.services import Services
from lapse.webhooks import QuickAllow, admission_target


async def _note_adoption(
    body: kopf.Body, username: str, grants: list[GranteeGrant], memo: kopf.Memo
) -> None:
    """A person other than its maker changed an object a grantee made: it is theirs too from
    now on. Controllers and other system accounts update objects all the time and adopt none."""
    if username.startswith("system:"):
        return
    uid = str((body.get("metadata") or {}).get("uid") or "")
    own = {g.key for g in grants}
    for key in set(services_of(memo).index.made_by(uid)):
        if key not in own:
            await services_of(memo).grantor.footholds.adopt(key, uid, username)


async def _connection(memo: kopf.Memo, namespace: str, name: str, groups: list[str]) -> Connection:
    """What a connection into a pod is judged by: the pod, and the RBAC index once loaded."""
    services = services_of(memo)
    pod, error = await services.grantor.footholds.read_pod(namespace, name)
    ready = services.rbac.ready.is_set()
    return Connection(
        pod=pod,
        groups=tuple(groups),
        holdings=services.rbac.holdings() if ready else None,
        snapshot=services.rbac.snapshot() if ready else None,
        error=error,
    )


async def check_foothold(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    resource: kopf.Resource,
    memo: kopf.Memo,
    subresource: str | None = None,
    old: Any = None,
    dryrun: bool = False,
    **_: Any,
) -> None:
    username = str(userinfo.get("username", ""))
    keys = compute_caller_keys(username, userinfo.get("groups") or [])
    grants = services_of(memo).index.grantees(keys)
    if old is not None and not dryrun:
        await _note_adoption(body, username, grants, memo)
    if not grants:
        return
    now = datetime.now(UTC)
    target = admission_target()
    metadata = body.get("metadata") or {}
    namespace = (target.namespace if target else None) or metadata.get("namespace") or None
    # Where a namespaced request does not say its namespace, decide as if the grant covered it.
    known = namespace is not None or resource.plural in CLUSTER_SCOPED
    covering = compute_covering_grant(grants, namespace, now, known=known)
    name = (target.name if target else "") or str(metadata.get("name") or "")
    connection = None
    if covering is not None and resource.plural == "pods" and subresource in CONNECTS:
        groups = [str(g) for g in userinfo.get("groups") or []]
        connection = await _connection(memo, namespace or "", name, groups)
    verdict = compute_foothold_verdict(
        username=str(userinfo.get("username", "")),
        resource=resource.plural,
        subresource=subresource,
        namespace=namespace,
        name=name,
        body=plain(body),
        grant=covering,
        policies={p.metadata.name: p for p in services_of(memo).policies.all()},
        now=now,
        old=plain(old) if old is not None else None,
        connection=connection,
    )
    footholds = services_of(memo).grantor.footholds
    if verdict.refusal is not None:
        if covering is not None and not dryrun:
            await footholds.refused(covering.key, resource.plural, verdict.refusal)
        raise kopf.AdmissionError(verdict.refusal, code=403)
    if verdict.foothold is None or verdict.grant is None or dryrun:
        return
    try:
        await footholds.record(verdict.grant.key, verdict.foothold)
    except FootholdNotRecorded as error:
        raise kopf.AdmissionError(
            f"Lapse could not record this on {verdict.grant.describe()} ({error}); it was not "
            "allowed. Try again in a moment.",
            code=503,
        ) from None


def quick_allow(memo: kopf.Memo) -> QuickAllow:
    """What `check_foothold` would let through without a word, decided before kopf builds its
    admission context: a caller with no active grant, creating (or changing something no
    grantee made). Anything else goes to `check_foothold`."""

    def allow(hook: str, review: Mapping[str, Any]) -> bool:
        if not hook.startswith(FOOTHOLD_HOOK_PREFIX):
            return False
        services = getattr(memo, "services", None)
        if not isinstance(services, Services):
            return False
        request = review.get("request") or {}
        user = request.get("userInfo") or {}
        username = str(user.get("username") or "")
        keys = compute_caller_keys(username, [str(g) for g in user.get("groups") or ()])
        if services.index.grantees(keys):
            return False
        old = request.get("oldObject")
        if old is None or request.get("dryRun") or username.startswith("system:"):
            return True
        # A person changing an object a grantee made adopts it (see _note_adoption).
        body = request.get("object") or old
        uid = str(((body or {}).get("metadata") or {}).get("uid") or "")
        return not services.index.made_by(uid)

    return allow


for _group, _version, _plural, _sub, _operations in WATCHED:
    kopf.on.validate(
        group=_group,
        version=_version,
        plural=_plural,
        subresource=_sub,
        id=f"{FOOTHOLD_HOOK_PREFIX}{_plural}" + (f"-{_sub}" if _sub else ""),
        operations=list(_operations),  # type: ignore[arg-type]
        # It records what it admits (never on a dry run): the API server must know that.
        side_effects=True,
        ignore_failures=True,
    )(check_foothold)
