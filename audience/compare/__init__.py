"""Comparing runs: tables, plots, CPU latency."""
