"""User text quoted in Lapse's messages ends as one sentence, never running into the next."""

from __future__ import annotations

import pytest

from lapse.core.sentences import compute_quoted, compute_sentence


@pytest.mark.parametrize(
    ("typed", "sentence"),
    [
        ("fixed", "fixed."),
        ("fixed.", "fixed."),
        ("  fixed  ", "fixed."),
        ("really fixed!", "really fixed!"),
        ("fixed?", "fixed?"),
        ("wait for it…", "wait for it…"),
        ("", ""),
        (None, ""),
    ],
)
def test_compute_sentence_closes_once(typed: str | None, sentence: str) -> None:
    assert compute_sentence(typed) == sentence


def test_compute_quoted_with_and_without_text() -> None:
    lead = "carol revoked this break-glass"
    assert compute_quoted(lead, "fixed") == "carol revoked this break-glass: fixed."
    assert compute_quoted(lead, "fixed.") == "carol revoked this break-glass: fixed."
    assert compute_quoted(lead, None) == "carol revoked this break-glass."
    assert compute_quoted("Denied by bob", "", default="no reason given") == (
        "Denied by bob: no reason given."
    )
