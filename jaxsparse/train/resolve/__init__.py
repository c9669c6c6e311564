"""Resolving a run: a config (schema, overrides, command-line flags) becomes a typed `Run` with its
`Plan` (parameter counts, N̄, FLOPs, memory) and optimizer, before anything is compiled."""
