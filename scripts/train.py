"""Train and cross-validate an age/gender model into a run folder.

The command lives in the package, `python -m audience.cli.train` (installed: `audience-train`);
this file keeps `python scripts/train.py` working as the README types it. `--help` lists the flags.
"""

import sys

from audience.cli.train import main

if __name__ == "__main__":
    sys.exit(main(program="scripts/train.py"))
