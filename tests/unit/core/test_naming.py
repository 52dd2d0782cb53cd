from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from lapse.core.naming import compute_binding_name

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_readable_and_deterministic() -> None:
    name = compute_binding_name("AccessRequest", "payments", "fix-retries", "uid-1")
    assert name.startswith("lapse-fix-retries-")
    assert name == compute_binding_name("AccessRequest", "payments", "fix-retries", "uid-1")


def test_recreated_request_gets_another_name() -> None:
    first = compute_binding_name("AccessRequest", "payments", "fix", "uid-1")
    again = compute_binding_name("AccessRequest", "payments", "fix", "uid-2")
    assert first != again


def test_kind_and_namespace_count() -> None:
    names = {
        compute_binding_name("AccessRequest", "a", "x", "u"),
        compute_binding_name("AccessRequest", "b", "x", "u"),
        compute_binding_name("BreakGlass", None, "x", "u"),
    }
    assert len(names) == 3


names = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", fullmatch=True)


@given(names, st.uuids())
def test_always_a_dns_label_of_63_at_most(name: str, uid: object) -> None:
    result = compute_binding_name("AccessRequest", "payments", name, str(uid))
    assert len(result) <= 63
    assert DNS_LABEL.match(result), result


@given(names, st.uuids(), st.uuids())
def test_uid_decides(name: str, one: object, other: object) -> None:
    same = str(one) == str(other)
    a = compute_binding_name("AccessRequest", "ns", name, str(one))
    b = compute_binding_name("AccessRequest", "ns", name, str(other))
    assert (a == b) == same
