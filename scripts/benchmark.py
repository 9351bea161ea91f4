"""Benchmarks of the Audience pipelines; one subcommand each, the last output line is JSON.

The command lives in the package, `python -m audience.cli.benchmark` (installed: `audience-benchmark`);
this file keeps `python scripts/benchmark.py` working as the README types it. `--help` lists the flags.
"""

import sys

from audience.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
