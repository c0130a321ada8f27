"""Cross-cutting API plumbing: scoping, errors, pagination, limits."""
