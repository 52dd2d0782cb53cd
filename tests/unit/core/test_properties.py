"""Properties of the pure core that no list of examples can pin down: durations, the policy
decision and binding names, over inputs hypothesis makes up — and the small rules found by
attacking Lapse (label values, Event names, Lapse's finalizer)."""

from __future__ import annotations

import re
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from lapse.core.admission import FINALIZER, compute_finalizer_refusal
from lapse.core.durations import DurationError, format_duration, parse_duration
from lapse.core.models import (
    DURATION_PATTERN,
    AccessPolicy,
    AccessRequest,
    ApprovalMode,
)
from lapse.core.naming import compute_binding_name, compute_event_name, compute_label_value
from lapse.core.policy import Outcome, compute_decision

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

# Durations ------------------------------------------------------------------------------------

grammatical = st.from_regex(DURATION_PATTERN, fullmatch=True)


@given(grammatical)
def test_a_duration_in_the_grammar_parses_unless_it_is_zero(text: str) -> None:
    try:
        value = parse_duration(text)
    except DurationError:
        assert text == "" or all(c in "0hms" for c in text), text
        return
    assert value > timedelta(0)
    # The canonical spelling round-trips, within the grammar's 9999 hours (600000m parses,
    # but its canonical 10000h does not: hours have four digits).
    if value < timedelta(hours=10000):
        assert parse_duration(format_duration(value)) == value


@given(st.text(max_size=24))
def test_nothing_outside_the_grammar_parses(text: str) -> None:
    if re.fullmatch(DURATION_PATTERN, text):
        return
    try:
        parse_duration(text)
    except DurationError:
        return
    raise AssertionError(f"{text!r} parsed although the CRD pattern refuses it")


@given(st.integers(min_value=-(10**9), max_value=0))
def test_format_of_nothing_or_less_never_parses(seconds: int) -> None:
    text = format_duration(timedelta(seconds=seconds))
    try:
        parse_duration(text)
    except DurationError:
        return
    raise AssertionError(text)


# The policy decision ----------------------------------------------------------------------------

ROLES = ("view", "edit", "admin")
NAMESPACES = ("payments", "search")
GROUPS = ("devs", "leads", "ops")
small = st.integers(min_value=1, max_value=600)


@st.composite
def policies(draw: st.DrawFn, name: str) -> AccessPolicy:
    longest = draw(small)
    return AccessPolicy.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "requesters": {
                    "groups": draw(st.lists(st.sampled_from(GROUPS), max_size=2)),
                    "users": draw(st.lists(st.sampled_from(("alice", "bob")), max_size=1)),
                },
                "roles": [
                    {"kind": draw(st.sampled_from(("ClusterRole", "Role"))), "name": r}
                    for r in draw(st.lists(st.sampled_from(ROLES), min_size=1, max_size=3))
                ],
                "namespaces": draw(st.lists(st.sampled_from(NAMESPACES), max_size=2)),
                "defaultDuration": f"{draw(st.integers(1, longest))}m",
                "maxDuration": draw(st.sampled_from((f"{longest}m", "0s", "0h0m"))),
                "approval": {"mode": draw(st.sampled_from(list(ApprovalMode)))},
            },
        }
    )


@st.composite
def policy_sets(draw: st.DrawFn) -> list[AccessPolicy]:
    count = draw(st.integers(min_value=0, max_value=4))
    return [draw(policies(f"p{i}")) for i in range(count)]


@st.composite
def requests(draw: st.DrawFn) -> AccessRequest:
    spec: dict[str, object] = {
        "role": {
            "kind": draw(st.sampled_from(("ClusterRole", "Role"))),
            "name": draw(st.sampled_from(ROLES)),
        },
        "reason": "property",
        "requester": {
            "username": draw(st.sampled_from(("alice", "bob", "mallory"))),
            "groups": draw(st.lists(st.sampled_from(GROUPS), max_size=2)),
        },
    }
    if draw(st.booleans()):
        spec["duration"] = f"{draw(st.integers(1, 900))}m"
    return AccessRequest.model_validate(
        {"metadata": {"name": "r", "namespace": draw(st.sampled_from(NAMESPACES))}, "spec": spec}
    )


def eligible(policy: AccessPolicy, request: AccessRequest) -> bool:
    spec, who = policy.spec, request.spec.requester
    assert who is not None
    return (
        (
            who.username in spec.requesters.users
            or bool(set(who.groups) & set(spec.requesters.groups))
        )
        and any(
            r.kind == request.spec.role.kind and r.name == request.spec.role.name
            for r in spec.roles
        )
        and request.metadata.namespace in spec.namespaces
    )


@settings(max_examples=300)
@given(requests(), policy_sets())
def test_never_grants_beyond_the_deciding_policy(
    request: AccessRequest, found: list[AccessPolicy]
) -> None:
    decision = compute_decision(request, found)
    if decision.outcome not in (Outcome.GRANT, Outcome.PENDING):
        return
    deciding = next(p for p in found if p.metadata.name == decision.policy)
    assert eligible(deciding, request)
    assert decision.duration is not None and decision.duration > timedelta(0)
    assert decision.duration <= parse_duration(deciding.spec.max_duration)
    if decision.outcome == Outcome.GRANT:
        assert deciding.spec.approval.mode == ApprovalMode.AUTO


@settings(max_examples=300)
@given(requests(), policy_sets(), st.randoms(use_true_random=False))
def test_the_order_of_policies_never_matters(
    request: AccessRequest, found: list[AccessPolicy], rng: object
) -> None:
    shuffled = list(found)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    assert compute_decision(request, found) == compute_decision(request, shuffled)


@settings(max_examples=300)
@given(requests(), policy_sets(), policies("zz-unrelated"))
def test_a_policy_for_someone_else_changes_nothing(
    request: AccessRequest, found: list[AccessPolicy], other: AccessPolicy
) -> None:
    who = request.spec.requester
    assert who is not None
    requesters = other.spec.requesters
    if who.username in requesters.users or set(who.groups) & set(requesters.groups):
        return
    assert compute_decision(request, [*found, other]) == compute_decision(request, found)


@given(requests())
def test_no_policy_never_grants(request: AccessRequest) -> None:
    assert compute_decision(request, []).outcome == Outcome.DENY


# Names ----------------------------------------------------------------------------------------

owner_names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", fullmatch=True)
kinds = st.sampled_from(("AccessRequest", "BreakGlass"))
namespaces = st.one_of(
    st.none(), st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
)
owners = st.tuples(kinds, namespaces, owner_names, st.uuids().map(str))


@given(owners)
def test_binding_names_are_deterministic_dns_labels(
    owner: tuple[str, str | None, str, str],
) -> None:
    name = compute_binding_name(*owner)
    assert name == compute_binding_name(*owner)
    assert len(name) <= 63 and DNS_LABEL.match(name), name


@given(st.lists(owners, min_size=2, max_size=30, unique=True))
def test_distinct_owners_never_share_a_binding_name(
    found: list[tuple[str, str | None, str, str]],
) -> None:
    names = [compute_binding_name(*o) for o in found]
    # An owner with no namespace and one with the empty namespace are the same owner.
    distinct = {(k, ns or "", n, u) for k, ns, n, u in found}
    assert len(set(names)) == len(distinct)


@given(owner_names)
def test_label_values_fit_any_owner_name(name: str) -> None:
    value = compute_label_value(name)
    assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert name.startswith(value)


@given(owner_names, st.text(alphabet="0123456789abcdef", min_size=16, max_size=16))
def test_event_names_fit_any_owner_name(name: str, suffix: str) -> None:
    event = compute_event_name(name, suffix)
    assert len(event) <= 253 and DNS_SUBDOMAIN.match(event), event
    assert event.endswith(f".{suffix}")


# Lapse's finalizer --------------------------------------------------------------------------------


def test_removing_lapses_finalizer_before_deletion_is_refused() -> None:
    refusal = compute_finalizer_refusal([FINALIZER, "other"], ["other"], deleting=False)
    assert refusal is not None and "delete the AccessRequest instead" in refusal


def test_finalizer_rules_let_everything_else_through() -> None:
    assert compute_finalizer_refusal([FINALIZER], [], deleting=True) is None
    assert compute_finalizer_refusal([FINALIZER], [FINALIZER, "x"], deleting=False) is None
    assert compute_finalizer_refusal(["x"], [], deleting=False) is None
