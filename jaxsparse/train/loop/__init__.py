"""The training loop: `driver.train` opens a `Session` (state, data, checkpoints, metrics), runs its
steps with the actions due after each (eval, checkpoint, pruning records), and ends every fault."""
