"""Where the audit trail goes: sinks a security team already runs.

Each sink takes batches of signed trail records (`lapse.core.trail`) and either delivers all of
them or raises `SinkError`; the exporter (`lapse.exporter`) keeps every record in its owner's
status until each sink has it, so a sink never needs a queue, a disk or a retry of its own.
"""
