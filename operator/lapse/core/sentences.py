"""Sentences that quote what people typed.

Reasons and comments come from users, with or without a final full stop; Lapse's messages go
on after them ("… revoked this break-glass: fixed. The record stays for the review."), so each
quoted text is closed as a sentence exactly once, never run into the next one or doubled.
"""

from __future__ import annotations

_ENDINGS = (".", "!", "?", "…")


def compute_sentence(text: str | None, *, default: str = "") -> str:
    """`text` as a sentence: stripped, ending in one stop; `default` when it is empty."""
    said = (text or "").strip() or default
    if not said or said.endswith(_ENDINGS):
        return said
    return f"{said}."


def compute_quoted(lead: str, text: str | None, *, default: str = "") -> str:
    """`lead: text.`, or `lead.` when nothing was said and there is no default."""
    said = compute_sentence(text, default=default)
    return f"{lead}: {said}" if said else f"{lead}."
