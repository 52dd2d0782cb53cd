"""What turns a commit into something a platform team installs: the operator image's pinned
dependencies, its base built without a registry, the version stamped into every manifest, and
the rendered install YAML a release attaches.

It is a product part beside `plugins/` (the krew plugin) and imports nothing from `tests/`.
"""
