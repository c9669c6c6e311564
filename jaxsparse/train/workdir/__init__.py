"""The run directory: its layout (one owner of every path), the lock, the records (metrics.jsonl,
summary.json), and verified orbax checkpoints with their checksums and fallback."""
