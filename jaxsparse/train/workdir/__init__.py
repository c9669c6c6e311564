"""The run directory: its layout (`layout`: the one owner of every name and path in it, the step
listing and the summary reader), the checks before a run and `--restart` (`check`), the lock, the
records (metrics.jsonl), and verified orbax checkpoints with their checksums and fallback."""
