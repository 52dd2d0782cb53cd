from __future__ import annotations

from datetime import timedelta

from lapse.core.conditions import compute_conditions, find_condition
from tests.unit.builders import NOW


def test_adds_a_new_condition() -> None:
    result = compute_conditions([], "Active", "True", "Granted", "Granted.", NOW, 1)
    assert len(result) == 1
    assert result[0].last_transition_time == NOW
    assert result[0].observed_generation == 1


def test_time_kept_when_status_holds() -> None:
    first = compute_conditions([], "Active", "False", "Pending", "Waiting.", NOW, 1)
    later = NOW + timedelta(minutes=5)
    second = compute_conditions(first, "Active", "False", "Denied", "No.", later, 1)
    condition = find_condition(second, "Active")
    assert condition is not None
    assert condition.reason == "Denied"
    assert condition.last_transition_time == NOW


def test_time_moves_when_status_flips() -> None:
    first = compute_conditions([], "Active", "True", "Granted", "Yes.", NOW, 1)
    later = NOW + timedelta(minutes=5)
    second = compute_conditions(first, "Active", "False", "Expired", "Over.", later, 1)
    assert second[0].last_transition_time == later


def test_other_conditions_untouched_and_ordered() -> None:
    both = compute_conditions([], "Approved", "True", "AutoApproved", ".", NOW, 1)
    both = compute_conditions(both, "Active", "True", "Granted", ".", NOW, 1)
    updated = compute_conditions(both, "Active", "False", "Expired", ".", NOW, 1)
    assert [c.type for c in updated] == ["Approved", "Active"]
    assert updated[0] == both[0]
