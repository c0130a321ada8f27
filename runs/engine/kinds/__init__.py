"""The engine side of each step kind: one module per kind."""
