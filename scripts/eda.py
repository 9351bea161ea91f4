"""Explore an Adience root: a JSON summary, or a self-contained HTML report, and optionally the label file.

The command lives in the package, `python -m audience.cli.eda` (installed: `audience-eda`);
this file keeps `python scripts/eda.py` working as the README types it. `--help` lists the flags.
"""

import sys

from audience.cli.eda import main

if __name__ == "__main__":
    sys.exit(main())
