"""Evaluate a checkpoint on one fold, or on every labelled image, of an Adience root or a UTKFace folder.

The command lives in the package, `python -m audience.cli.evaluate` (installed: `audience-evaluate`);
this file keeps `python scripts/evaluate.py` working as the README types it. `--help` lists the flags.
"""

import sys

from audience.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
