"""kopf's essence of an object, built without first copying what it then throws away.

On every event of an object with change-detecting handlers (every AccessRequest and BreakGlass
event), kopf builds its "essence" — the object without its status and system metadata — to
compare with the one it stored in the `last-handled-configuration` annotation. Its builder
deep-copies the whole body first and deletes the status and metadata from the copy; for a
grant those are most of the object (the bindings, the conditions, every field manager's
`managedFields`). Under a burst of grants or a wave of ends that copy was a fifth of the
operator's time on the interpreter lock, time the reaper's deletes wait for.

`LeanDiffBaseStorage` hands kopf's own builder the body with only what the essence can hold:
the same essence, the same annotation, the same keys (an operator upgraded to it reads what an
older one stored).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import kopf
from kopf._cogs.structs import bodies, dicts

# What kopf keeps of the metadata in an essence (DiffBaseStorage.build).
KEPT_METADATA = ("labels", "annotations")


def compute_lean_body(
    body: Mapping[str, Any], extra_fields: Sequence[dicts.FieldSpec] | None
) -> dict[str, Any]:
    """`body` less what kopf's essence never holds: the status (unless a handler asks for
    fields of it) and the metadata other than labels and annotations. Shallow: nothing is
    copied here; kopf's builder copies what it keeps."""
    wanted_status = bool(extra_fields)
    lean = {
        key: value
        for key, value in body.items()
        if key != "metadata" and (key != "status" or wanted_status)
    }
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping):
        lean["metadata"] = {key: metadata[key] for key in KEPT_METADATA if key in metadata}
    return lean


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's default diff-base storage (same prefix, key and annotation) with a builder that
    copies only what the essence keeps."""

    def build(
        self,
        *,
        body: bodies.Body,
        extra_fields: Iterable[dicts.FieldSpec] | None = None,
    ) -> bodies.BodyEssence:
        fields = list(extra_fields) if extra_fields is not None else None
        lean = cast(bodies.Body, compute_lean_body(body, fields))
        essence = kopf.DiffBaseStorage.build(self, body=lean, extra_fields=fields)
        # The keys come from the whole body: kopf names them after its owners and kind.
        self.remove_annotations(essence, set(self.make_keys(self.key, body=body)))
        self.remove_empty_stanzas(essence)
        return essence
