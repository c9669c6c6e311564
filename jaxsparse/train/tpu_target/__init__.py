"""Compiling a run for a TPU slice this machine does not have (`--compile_for`): the slice's
devices from its topology, and per-device memory from the compiled steps."""
