"""A local Kubernetes API server for Lapse's tests, benchmark and demo.

Real HTTP, real REST semantics, state in memory: enough of Kubernetes that unmodified kopf and
unmodified kubectl work against it. See README.md beside this file for what it serves and where
it knowingly differs from a real cluster.
"""
