"""Comparing runs: tables, served checkpoints as rows, plots (the CPU latencies they show are audience.bench's)."""
