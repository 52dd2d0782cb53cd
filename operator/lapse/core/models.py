"""The Lapse API (`lapse.dev/v1alpha1`) as pydantic models: the one definition of the schema.

The CRDs in `crds/` are generated from these classes (`make crds`), and a test checks the two
agree, so a field described here is the field `kubectl explain` shows. Spec is intent, status is
observation, as the Kubernetes API conventions ask.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from lapse.core.kinds import API_VERSION

# Go-style durations limited to hours, minutes and seconds: what an access window needs, and a
# form both CEL at admission and the core parser agree on.
DURATION_PATTERN = r"^([0-9]{1,4}h)?([0-9]{1,6}m)?([0-9]{1,8}s)?$"


class Model(BaseModel):
    """Base for every API type: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=16,
        description="A duration such as 30m, 2h or 1h30m (hours, minutes, seconds).",
    ),
]


class RoleKind(StrEnum):
    CLUSTER_ROLE = "ClusterRole"
    ROLE = "Role"


class RoleRef(Model):
    """The role to bind: a ClusterRole, or a Role in the request's own namespace."""

    kind: RoleKind = Field(description="ClusterRole or Role.")
    name: str = Field(
        min_length=1, max_length=253, description="Name of the ClusterRole or Role to bind."
    )


class SubjectKind(StrEnum):
    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


class Subject(Model):
    """Who receives the access; the RBAC subject written into the binding."""

    kind: SubjectKind = Field(description="User, Group or ServiceAccount.")
    name: str = Field(min_length=1, max_length=253, description="Name of the subject.")
    namespace: str | None = Field(
        default=None, max_length=63, description="Namespace of a ServiceAccount subject."
    )


class Identities(Model):
    """A set of users and groups, as the API server names them in `userInfo`."""

    users: list[str] = Field(default_factory=list, description="User names.")
    groups: list[str] = Field(default_factory=list, description="Group names.")


class UserInfo(Model):
    """An identity as the API server authenticated it (admission `userInfo`)."""

    username: str = Field(description="The authenticated user name.")
    groups: list[str] = Field(default_factory=list, description="The user's groups.")
    uid: str | None = Field(default=None, description="The user's UID, if the API server had one.")


class LabelSelectorRequirement(Model):
    key: str = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn.")


class LabelSelector(Model):
    """A Kubernetes label selector over namespaces."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels a namespace must carry."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Set-based requirements on namespace labels."
    )


class ApprovalMode(StrEnum):
    AUTO = "Auto"
    APPROVERS = "Approvers"


class Approval(Model):
    """How a request within the policy is approved."""

    mode: ApprovalMode = Field(
        default=ApprovalMode.APPROVERS,
        description="Auto grants at once (self-service); Approvers waits for approvers.",
    )
    approvers: Identities = Field(
        default_factory=Identities, description="Who may approve or deny requests."
    )
    required: int = Field(
        default=1,
        ge=1,
        le=10,
        description="How many distinct approvers must approve; the requester never counts.",
    )
    trusted_appliers: Identities = Field(
        default_factory=Identities,
        description=(
            "Identities whose creation of a request counts as approval, such as a GitOps "
            "controller's service account; only they may name another subject."
        ),
    )
    timeout: Duration = Field(
        default="24h", description="How long a request may wait for approval before it expires."
    )
    exposure_accepted: Identities = Field(
        default_factory=Identities,
        description=(
            "Who may act as this policy's trusted appliers or approvers without holding up "
            "approvals: people trusted as much as those identities (a GitOps tool's own "
            "operators, say). They are still listed in status.exposures."
        ),
    )


class BreakGlassReview(Model):
    """Who reviews a break-glass afterwards, and by when."""

    approvers: Identities = Field(
        default_factory=Identities, description="Who may review a break-glass."
    )
    deadline: Duration = Field(
        default="24h", description="Time after activation by which a review is due."
    )
    revoke_if_unreviewed_after: Duration | None = Field(
        default=None,
        description="Revoke access still active when no review arrived this long after activation.",
    )


class FootholdAction(StrEnum):
    REPORT = "Report"
    REMOVE = "Remove"


class StrongerPodAction(StrEnum):
    REFUSE = "Refuse"
    END_PODS = "EndPods"
    REPORT = "Report"


class FootholdPolicy(Model):
    """What happens, when a grant ends, to what its holder made with it."""

    workloads: FootholdAction = Field(
        default=FootholdAction.REPORT,
        description=(
            "Pods and workloads (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob) "
            "made under the grant: Report them, or Remove them."
        ),
    )
    rbac: FootholdAction = Field(
        default=FootholdAction.REMOVE,
        description=(
            "Roles, RoleBindings, ClusterRoles and ClusterRoleBindings made under the grant: "
            "Remove them (a way back in after the grant), or Report them."
        ),
    )
    stronger_pods: StrongerPodAction = Field(
        default=StrongerPodAction.REFUSE,
        description=(
            "Exec or attach, under a grant, into a pod whose ServiceAccount can do what the "
            "grant cannot (its token can be read from inside): Refuse it, end those pods when "
            "the grant ends (EndPods: a token bound to a pod dies with it), or only Report it."
        ),
    )


class CapabilityRules(Model):
    """What a policy does with grants that carry named capabilities (see the README's list:
    ReadSecrets, ExecIntoPods, RunWorkloads, MintTokens, Impersonate, WriteRBAC,
    BindOrEscalate, DeleteNamespaces, Wildcards, NodeProxy)."""

    require_approval: list[str] = Field(
        default_factory=list,
        description="Capabilities that need an approver even under mode Auto.",
    )
    refuse: list[str] = Field(
        default_factory=list, description="Capabilities this policy never grants."
    )


class BreakGlassPolicy(Model):
    """Who may break glass for which roles, and for how long."""

    requesters: Identities = Field(default_factory=Identities, description="Who may break glass.")
    roles: list[RoleRef] = Field(
        default_factory=list, description="ClusterRoles that may be granted in an emergency."
    )
    max_duration: Duration = Field(default="1h", description="The longest break-glass allowed.")
    require_incident: bool = Field(
        default=True, description="Whether an incident reference is mandatory."
    )
    review: BreakGlassReview = Field(
        default_factory=BreakGlassReview, description="The review after the fact."
    )


class AccessPolicySpec(Model):
    """Who may ask for which role, where, for how long, and who approves."""

    requesters: Identities = Field(
        default_factory=Identities, description="Who may request access under this policy."
    )
    roles: list[RoleRef] = Field(default_factory=list, description="Roles that may be requested.")
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces where access may be requested, by name."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces where access may be requested, by label."
    )
    default_duration: Duration = Field(
        default="1h", description="Duration granted when a request names none."
    )
    max_duration: Duration = Field(default="4h", description="The longest duration allowed.")
    approval: Approval = Field(default_factory=Approval, description="How requests are approved.")
    break_glass: BreakGlassPolicy | None = Field(
        default=None, description="Emergency access this policy allows, if any."
    )
    footholds: FootholdPolicy = Field(
        default_factory=FootholdPolicy,
        description="What happens to what a grantee made under a grant, when the grant ends.",
    )
    capabilities: CapabilityRules = Field(
        default_factory=CapabilityRules,
        description="Approval or refusal for grants that carry named capabilities.",
    )
    max_total_duration: Duration | None = Field(
        default=None,
        description=(
            "The longest a request and its extensions may last together, from the first grant "
            "to the last expiry; twice maxDuration when omitted."
        ),
    )
    max_extensions: int = Field(
        default=3, ge=0, le=100, description="How many times one grant may be extended."
    )
    max_lead_time: Duration = Field(
        default="168h",
        description="How far ahead a request may ask to start (spec.startAt); a week by default.",
    )
    on_role_change: Literal["Warn", "Revoke"] = Field(
        default="Warn",
        description=(
            "When the bound role's rules change (or it is deleted) during a grant: Warn "
            "(record and report it) or Revoke the grant."
        ),
    )


class Phase(StrEnum):
    PENDING = "Pending"
    APPROVED = "Approved"
    SCHEDULED = "Scheduled"
    ACTIVE = "Active"
    EXPIRED = "Expired"
    DENIED = "Denied"
    REVOKED = "Revoked"
    INVALID = "Invalid"

    @property
    def ended(self) -> bool:
        return self in ENDED_PHASES


ENDED_PHASES = frozenset({Phase.EXPIRED, Phase.DENIED, Phase.REVOKED, Phase.INVALID})


class Condition(Model):
    """A condition per the Kubernetes API conventions."""

    type: str = Field(description="PascalCase type, such as Approved or Active.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="A sentence for humans.")
    last_transition_time: datetime = Field(description="When the status last flipped.")
    observed_generation: int | None = Field(
        default=None, description="The generation this condition was computed from."
    )


class ApprovalRecord(Model):
    """One verified approval or denial: the identity comes from the API server."""

    user: UserInfo = Field(description="Who decided, as authenticated by the API server.")
    decision: Literal["Approve", "Deny"] = Field(description="Approve or Deny.")
    at: datetime = Field(description="When the decision was recorded.")
    comment: str | None = Field(default=None, max_length=1024, description="Optional comment.")


class BindingRef(Model):
    """A binding Lapse created for a grant."""

    kind: Literal["RoleBinding", "ClusterRoleBinding"] = Field(description="Binding kind.")
    name: str = Field(description="Binding name.")
    namespace: str | None = Field(default=None, description="Namespace of a RoleBinding.")
    uid: str | None = Field(default=None, description="UID of the binding object.")


class Transition(Model):
    """One entry of the status history."""

    at: datetime = Field(description="When the transition happened.")
    phase: Phase = Field(description="The phase entered.")
    reason: str = Field(description="CamelCase reason.")
    message: str = Field(default="", description="A sentence for humans.")


class Foothold(Model):
    """One object a grantee made under a grant that could carry access past it."""

    api_version: str = Field(description="API version of the object.")
    kind: str = Field(description="Kind of the object.")
    resource: str = Field(description="Resource (plural) of the object.")
    namespace: str | None = Field(default=None, description="Namespace, if namespaced.")
    name: str = Field(description="Name of the object.")
    uid: str | None = Field(default=None, description="UID of the object made.")
    service_account: str | None = Field(
        default=None, description="The ServiceAccount a workload runs as."
    )
    connect: Literal["exec", "attach", "portforward"] | None = Field(
        default=None,
        description=(
            "Set for a connection into the pod rather than an object made: whoever connects "
            "may read the token of the ServiceAccount the pod runs as."
        ),
    )
    changed: bool = Field(
        default=False,
        description=(
            "An existing object changed under the grant (a workload's ServiceAccount, a "
            "binding's subjects, a role's rules); reported, never removed: it was not made "
            "under the grant."
        ),
    )
    adopted_by: str | None = Field(
        default=None,
        description=(
            "Someone other than the grantee who changed the object under the grant: it is "
            "then theirs too, and is reported instead of removed."
        ),
    )
    beyond: list[str] | None = Field(
        default=None,
        description=(
            "For a connection into a pod: a few things the pod's ServiceAccount can do that "
            "the grantee could not (what its token gives whoever reads it)."
        ),
    )
    at: datetime = Field(description="When it was made.")
    action: FootholdAction = Field(
        description=(
            "What the policy says to do at the grant's end; Remove on a connection into a pod "
            "ends that pod (strongerPods: EndPods), and the token bound to it with it."
        )
    )
    outcome: Literal["Removed", "Ended", "Reported", "Gone", "Changed", "Kept"] | None = Field(
        default=None,
        description=(
            "At the grant's end: Removed; Ended (the pod connected to was deleted); Reported "
            "(left in place by policy); Gone (already deleted); Changed (replaced by another "
            "object of that name, left alone); Kept (could not be removed, see the Events)."
        ),
    )


class RiskSummary(Model):
    """What the role gives, in plain words, as it stood when Lapse decided."""

    capabilities: list[str] = Field(
        default_factory=list, description="Flagged capabilities, such as ReadSecrets."
    )
    adds: list[str] = Field(default_factory=list, description="What is new for the subject.")
    already_had: list[str] = Field(
        default_factory=list, description="What the subject held already, without the grant."
    )
    summary: str = Field(default="", description="One line for the people who decide.")


# Activity: what a grant's subject did with it, from the API server's audit log (lapse.activity).


class ActivityEntry(Model):
    """One request the subject made during the grant, as the API server's audit log has it."""

    at: datetime = Field(description="When the API server received the request.")
    verb: str = Field(description="The API verb: get, create, update, patch, delete, …")
    resource: str = Field(description="Resource, with its subresource: pods, deployments/scale.")
    namespace: str | None = Field(default=None, description="Namespace, if namespaced.")
    name: str | None = Field(default=None, description="Name of the object, if one.")
    code: int | None = Field(default=None, description="The HTTP status the API server answered.")
    audit_id: str | None = Field(
        default=None, description="The audit event's auditID: the full record in the audit log."
    )


class ActivityCount(Model):
    """How often the subject used one verb on one resource during the grant."""

    verb: str = Field(description="The API verb.")
    resource: str = Field(description="Resource, with its subresource.")
    count: int = Field(ge=0, description="How many requests.")


class ActivityRecord(Model):
    """What the subject did during the grant, kept bounded; the API server's audit log (by
    user and time, or by each entry's auditId) holds the rest."""

    events: int = Field(default=0, ge=0, description="Audit events matched to this grant.")
    first_at: datetime | None = Field(default=None, description="The first request seen.")
    last_at: datetime | None = Field(default=None, description="The last request seen.")
    counts: list[ActivityCount] = Field(
        default_factory=list, description="Requests by verb and resource."
    )
    writes: list[ActivityEntry] = Field(
        default_factory=list, description="Every write and delete, with its object and time."
    )
    secret_reads: list[ActivityEntry] = Field(
        default_factory=list, description="Secrets read (get, list, watch)."
    )
    connects: list[ActivityEntry] = Field(
        default_factory=list, description="exec, attach and port-forward sessions."
    )
    denied: list[ActivityEntry] = Field(
        default_factory=list, description="Requests the API server refused (401, 403)."
    )
    omitted: int = Field(
        default=0,
        ge=0,
        description="Entries not kept here (the lists are bounded); see the audit log.",
    )
    updated_at: datetime | None = Field(default=None, description="When Lapse last wrote this.")


class Trail(Model):
    """The owner's exported audit trail (`lapse.core.trail`), written by Lapse's exporter
    alone: the signed records not yet delivered to every configured sink, and how far each
    sink has got. The owner is deleted by retention only once every sink has them all."""

    records: list[str] = Field(
        default_factory=list,
        description=(
            "Signed records (JSON) not yet delivered to every sink, the last `len` of `seq`."
        ),
    )
    seq: int = Field(default=0, ge=0, description="Records in the trail so far.")
    head: str | None = Field(default=None, description="The hash of the last record.")
    covered: dict[str, int] = Field(
        default_factory=dict, description="Facts of the status in the trail, by kind."
    )
    delivered: dict[str, int] = Field(
        default_factory=dict, description="Records each sink has received, by sink name."
    )


class GrantStatus(Model):
    """Status shared by AccessRequest and BreakGlass: one grant machinery, two kinds."""

    phase: Phase | None = Field(
        default=None,
        description=("Pending, Approved, Scheduled, Active, Expired, Denied, Revoked or Invalid."),
    )
    reason: str | None = Field(default=None, description="CamelCase reason of the current phase.")
    message: str | None = Field(default=None, description="Why the object is in its phase.")
    requester: UserInfo | None = Field(
        default=None, description="Who asked, as authenticated by the API server."
    )
    subject: Subject | None = Field(default=None, description="Who receives the access.")
    policy: str | None = Field(default=None, description="The AccessPolicy that decided.")
    duration: str | None = Field(default=None, description="The duration granted.")
    granted_at: datetime | None = Field(default=None, description="When the access began.")
    starts_at: datetime | None = Field(
        default=None,
        description="When the access begins (Scheduled) or began (Active): the clock's start.",
    )
    expires_at: datetime | None = Field(
        default=None, description="When the access ends: the one source of truth."
    )
    ended_at: datetime | None = Field(default=None, description="When the access ended.")
    bindings: list[BindingRef] = Field(
        default_factory=list, description="The bindings that carry the access."
    )
    history: list[Transition] = Field(
        default_factory=list, description="Every phase this object went through."
    )
    observed_generation: int | None = Field(
        default=None, description="The generation of the spec last acted upon."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Conditions per the Kubernetes API conventions."
    )
    risk: RiskSummary | None = Field(
        default=None, description="What the role gives, recorded when Lapse decided."
    )
    footholds: list[Foothold] | None = Field(
        default=None,
        description=(
            "What the grantee made under the grant that could outlive it, and what became of "
            "it when the grant ended. Written by Lapse's foothold webhook alone."
        ),
    )
    trail: Trail | None = Field(
        default=None,
        description=(
            "The audit records on their way to the configured sinks, and how far each got. "
            "Written by Lapse's exporter alone."
        ),
    )
    # Activity (lapse.activity): written by the audit sink's recorder alone.
    activity: ActivityRecord | None = Field(
        default=None,
        description=(
            "What the subject did with the grant, from the API server's audit log: counts, "
            "writes, Secrets read, exec sessions and refusals, bounded."
        ),
    )


class AccessRequestSpec(Model):
    """What access is wanted. Immutable once created: asking again means a new request."""

    role: RoleRef = Field(description="The role wanted in this request's namespace.")
    duration: Duration | None = Field(
        default=None, description="How long; the policy's defaultDuration when omitted."
    )
    reason: str = Field(min_length=1, max_length=1024, description="Why the access is needed.")
    ticket: str | None = Field(
        default=None, max_length=256, description="A ticket or change reference."
    )
    subject: Subject | None = Field(
        default=None,
        description=(
            "Who receives the access. Only a policy's trusted appliers may name it; "
            "otherwise it is the requester."
        ),
    )
    requester: UserInfo | None = Field(
        default=None,
        description=(
            "Set by Lapse at admission from the API server's userInfo; "
            "any value written by a user is replaced."
        ),
    )
    start_at: datetime | None = Field(
        default=None,
        description=(
            "When the access should begin (RFC 3339); decided and approved ahead, bound at "
            "this time, and the duration counts from it. Now when omitted."
        ),
    )
    extends: str | None = Field(
        default=None,
        max_length=253,
        description=(
            "The AccessRequest in this namespace whose active grant this one continues: it "
            "begins the moment that one expires, with no gap."
        ),
    )


class ExtensionChain(Model):
    """Where a request stands in a chain of extensions, for the policy's limits on it."""

    root: str = Field(description="The request the chain began with.")
    started_at: datetime = Field(description="When the chain's first grant began.")
    extensions: int = Field(
        ge=1, description="How many extensions this one makes, itself included."
    )


class ApprovalRequirement(Model):
    """What the deciding policy asked for, recorded when the request is decided, so that
    everyone who may read the request (not only those who may read the policy) sees who
    approves and how many approvals are missing."""

    mode: Literal["Auto", "Approvers", "GitOps"] = Field(
        description="Auto (self-service), Approvers, or GitOps (a trusted applier's merge)."
    )
    required: int = Field(default=0, ge=0, description="Distinct approvals needed (Approvers).")
    approvers: Identities = Field(
        default_factory=Identities, description="Who may approve or deny (Approvers)."
    )
    deadline: datetime | None = Field(
        default=None, description="When the request expires if not approved (Approvers)."
    )


class AccessRequestStatus(GrantStatus):
    """Observed state of an AccessRequest."""

    approval: ApprovalRequirement | None = Field(
        default=None, description="What the deciding policy requires for approval."
    )
    approvals: list[ApprovalRecord] = Field(
        default_factory=list, description="Verified approvals and denials."
    )
    pull_request: str | None = Field(
        default=None, description="The pull request that approved it (GitOps)."
    )
    commit: str | None = Field(default=None, description="The commit applied (GitOps).")
    extended_by: str | None = Field(
        default=None,
        description="The extension that continues this grant; set once, so only one ever wins.",
    )
    chain: ExtensionChain | None = Field(
        default=None, description="For an extension: the chain it belongs to."
    )


class BreakGlassSpec(Model):
    """Emergency access: granted at once within policy, short, loud, reviewed afterwards."""

    role: RoleRef = Field(description="The ClusterRole wanted.")
    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to grant in; none means cluster-wide.",
    )
    duration: Duration = Field(description="How long the emergency access lasts.")
    reason: str = Field(min_length=1, max_length=1024, description="Why the glass is broken.")
    incident: str | None = Field(
        default=None, max_length=256, description="The incident reference, such as INC-4711."
    )
    requester: UserInfo | None = Field(
        default=None,
        description=(
            "Set by Lapse at admission from the API server's userInfo; "
            "any value written by a user is replaced."
        ),
    )


class Review(Model):
    """The review of a break-glass after the fact."""

    reviewer: UserInfo = Field(description="Who reviewed, as authenticated by the API server.")
    verdict: Literal["Justified", "Unjustified"] = Field(description="Justified or Unjustified.")
    comment: str | None = Field(default=None, max_length=2048, description="Review notes.")
    at: datetime = Field(description="When the review was recorded.")


class BreakGlassStatus(GrantStatus):
    """Observed state of a BreakGlass."""

    review_deadline: datetime | None = Field(default=None, description="When the review is due.")
    revoke_unreviewed_at: datetime | None = Field(
        default=None,
        description=(
            "When access still active is revoked if no review has arrived "
            "(the policy's review.revokeIfUnreviewedAfter, fixed at activation)."
        ),
    )
    review: Review | None = Field(default=None, description="The review, once recorded.")


class ObjectMeta(Model):
    """The parts of metadata Lapse reads."""

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ExposureRecord(Model):
    """Someone besides administrators who can act as an applier or approver of a policy."""

    role: Literal["Applier", "Approver"] = Field(description="Applier or Approver.")
    identity: str = Field(description="The identity the approval rests on.")
    actor: str = Field(description="Who can act as it: a User, Group or ServiceAccount.")
    way: str = Field(description="How: impersonate it, mint tokens for it, run pods as it, ...")
    through: str = Field(description="The binding (and role) that allows it.")
    accepted: bool = Field(
        default=False, description="Whether approval.exposureAccepted names the actor."
    )


class AccessPolicyStatus(Model):
    """What Lapse observed of a policy: whether its approvals rest on identities nobody else
    can assume."""

    observed_generation: int | None = Field(
        default=None, description="The generation this status was computed from."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Exposed: someone else can act as an applier/approver."
    )
    exposures: list[ExposureRecord] = Field(
        default_factory=list,
        description="Who besides administrators can act as the appliers and approvers, and how.",
    )


class AccessPolicy(Model):
    """Who may ask for which role, where, for how long, and who approves; cluster-scoped."""

    api_version: Literal["lapse.dev/v1alpha1"] = API_VERSION
    kind: Literal["AccessPolicy"] = "AccessPolicy"
    metadata: ObjectMeta
    spec: AccessPolicySpec
    status: AccessPolicyStatus = Field(default_factory=AccessPolicyStatus)


class AccessRequest(Model):
    """A request for temporary access to a role in this namespace; it lapses on expiry."""

    api_version: Literal["lapse.dev/v1alpha1"] = API_VERSION
    kind: Literal["AccessRequest"] = "AccessRequest"
    metadata: ObjectMeta
    spec: AccessRequestSpec
    status: AccessRequestStatus = Field(default_factory=AccessRequestStatus)


class BreakGlass(Model):
    """Emergency access, granted at once within policy, short, loud and reviewed afterwards."""

    api_version: Literal["lapse.dev/v1alpha1"] = API_VERSION
    kind: Literal["BreakGlass"] = "BreakGlass"
    metadata: ObjectMeta
    spec: BreakGlassSpec
    status: BreakGlassStatus = Field(default_factory=BreakGlassStatus)
