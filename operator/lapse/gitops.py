"""GitOps approval: a trusted applier's creation of a request is its approval — once, and only
from the applier itself.

A request the policy's trusted applier created stands for a reviewed, merged pull request. It
does so only if nobody else could have made it as the applier (lapse.exposure), and only the
first time that file at that commit is applied (lapse.ledger): re-creating it after a resync or
a restore grants nothing. The pull request and commit it names go into the request's status.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from lapse.core.approvals import (
    COMMIT_ANNOTATION,
    PULL_REQUEST_ANNOTATION,
    compute_gitops_ledger_key,
)
from lapse.core.grants import GrantKey
from lapse.core.kinds import ACCESS_REQUEST
from lapse.core.models import AccessPolicy, AccessRequest, AccessRequestStatus
from lapse.core.policy import Decision, Outcome
from lapse.exposure import ExposureKeeper
from lapse.ledger import GitOpsLedger
from lapse.reporting import Reporter


class GitOpsApprovals:
    def __init__(
        self,
        ledger: GitOpsLedger,
        exposure: ExposureKeeper,
        reporter: Reporter,
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.exposure = exposure
        self.reporter = reporter
        self.clock = clock

    async def check(
        self,
        request: AccessRequest,
        decision: Decision,
        status: AccessRequestStatus,
        policy: AccessPolicy | None,
    ) -> tuple[Decision, AccessRequestStatus]:
        """The decision once the GitOps checks have seen it, and the status with the pull
        request and commit; anything but a GitOps approval passes untouched."""
        requester = request.spec.requester
        if decision.reason != "GitOpsApproved" or requester is None:
            return decision, status
        decision = await self.exposure.check_applier(decision, policy, requester)
        if decision.reason != "GitOpsApproved":
            return decision, status
        annotations = request.metadata.annotations
        status = status.model_copy(
            update={
                "pull_request": annotations.get(PULL_REQUEST_ANNOTATION),
                "commit": annotations.get(COMMIT_ANNOTATION),
            }
        )
        ledger_key = compute_gitops_ledger_key(
            request.metadata.namespace,
            request.metadata.name,
            annotations.get(COMMIT_ANNOTATION),
            request.spec.model_dump(mode="json", by_alias=True, exclude={"requester"}),
        )
        first = await self.ledger.consume(ledger_key, request.metadata.uid or "", self.clock())
        if not first:
            return (
                Decision(
                    Outcome.DENY,
                    "GitOpsApprovalConsumed",
                    "This request (same namespace, name, commit and spec) was granted once "
                    "already; creating it again does not grant again. Commit a new request "
                    "to ask again.",
                    policy=decision.policy,
                ),
                status,
            )
        key = GrantKey(
            ACCESS_REQUEST.kind,
            request.metadata.namespace,
            request.metadata.name,
            request.metadata.uid or "",
        )
        await self.reporter.event(
            key,
            "Normal",
            "GitOpsApproved",
            f"Approved by {requester.username} applying pull request "
            f"{status.pull_request or '(none named)'} at commit "
            f"{status.commit or '(none named)'}.",
        )
        return decision, status
