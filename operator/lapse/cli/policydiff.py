"""`kubectl lapse policy diff --contexts a,b`: how the clusters' AccessPolicies differ.

GitOps is expected to keep every cluster's policies equal; this says when it did not — a
policy missing from a cluster, or one whose spec differs, shown as a unified diff between the
clusters holding each variant. The comparison is `lapse.core.policydiff`'s; this module reads
each cluster (all at once, the unreachable named) and prints.
"""

from __future__ import annotations

from typing import Any

from lapse.cli.client import Connection, Kube
from lapse.cli.errors import ExitCode
from lapse.cli.fleet import across, resolve_contexts
from lapse.cli.objects import Io
from lapse.cli.render import dump
from lapse.core.kinds import ACCESS_POLICY
from lapse.core.policydiff import build_variant_diff, compute_policy_comparisons

# diff(1)'s convention: 1 when the clusters' policies differ.
EXIT_DIFFERENT = 1

POLICY_DIFF_EXIT_CODES = """\
exit codes:
  0  every cluster that answered holds the same policies
  1  they differ (a policy missing somewhere, or a spec that differs), or a cluster refused
     to list them
  2  the command line is wrong
  5  a cluster did not answer; the others were compared"""


def _policies(count: int) -> str:
    return f"{count} polic{'y' if count == 1 else 'ies'}"


def read_specs(kube: Kube) -> dict[str, dict[str, Any]]:
    return {
        str((body.get("metadata") or {}).get("name")): dict(body.get("spec") or {})
        for body in kube.list(ACCESS_POLICY, None)
    }


def run_policy_diff(connection: Connection, io: Io, args: Any) -> int:
    contexts = resolve_contexts(
        args.kubeconfig, named=args.contexts, all_contexts=args.all_contexts
    )
    if not args.all_contexts and len(contexts) < 2:
        io.progress("note: one context compares nothing; name two or more, or --all-contexts")
    answers = across(contexts, connection, read_specs, timeout=float(args.cluster_timeout))
    answered = [a.context for a in answers if a.ok]
    specs = {a.context: a.value for a in answers if a.value is not None}
    comparisons = compute_policy_comparisons(specs, answered)
    failed = [a for a in answers if a.error is not None and not a.unreachable]
    unreachable = [a for a in answers if a.unreachable]
    differing = [c for c in comparisons if not c.same]
    if args.output in ("json", "yaml"):
        io.result(
            dump(
                {
                    "contexts": answered,
                    "unreachable": {a.context: a.error.message for a in unreachable if a.error},
                    "failed": {a.context: a.error.message for a in failed if a.error},
                    "policies": [
                        {
                            "name": c.name,
                            "same": c.same,
                            "present": c.present,
                            "missing": c.missing,
                            "variants": [v.model_dump() for v in c.variants],
                        }
                        for c in comparisons
                    ],
                },
                args.output,
            )
        )
    else:
        for answer in [*unreachable, *failed]:
            state = "unreachable: " if answer.unreachable else ""
            why = answer.error.message if answer.error else "no answer"
            print(f"warning: context {answer.context}: {state}{why}", file=io.err, flush=True)
        for comparison in differing:
            if comparison.missing:
                io.result(
                    f"accesspolicy/{comparison.name}: only in {', '.join(comparison.present)}"
                    f" (missing in {', '.join(comparison.missing)})"
                )
            if len(comparison.variants) > 1:
                reference, *others = comparison.variants
                sides = " vs ".join(",".join(v.contexts) for v in comparison.variants)
                io.result(f"accesspolicy/{comparison.name}: differs: {sides}")
                for other in others:
                    io.result(build_variant_diff(comparison.name, reference, other))
        same = len(comparisons) - len(differing)
        io.result(
            f"{len(answered)} of {len(contexts)} clusters compared ({', '.join(answered)}): "
            f"{_policies(len(comparisons))}, {same} the same everywhere, {len(differing)} not."
        )
    if differing or failed:
        return EXIT_DIFFERENT
    return ExitCode.UNREACHABLE if unreachable else ExitCode.OK
