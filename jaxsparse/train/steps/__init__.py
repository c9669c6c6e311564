"""The train state and the jitted, sharded train and eval steps of a `Run`, and compiling them
(memory analysis, the `grad_accum=auto` search)."""
