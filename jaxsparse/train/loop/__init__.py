"""The training loop: `driver.train` opens the loop (`session.open_session`: its fixed `Loop` and the
`Carry` its steps change: state, data, checkpoints, metrics); `stepping.run_loop` runs its steps with
the actions due after each (eval, checkpoint, pruning records); the driver ends every fault."""
