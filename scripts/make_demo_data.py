"""Write the synthetic demo dataset (procedurally drawn faces in the Adience layout) to a folder.

The command lives in the package, `python -m audience.cli.make_demo_data` (installed: `audience-make-demo-data`);
this file keeps `python scripts/make_demo_data.py` working as the README types it. `--help` lists the flags.
"""

import sys

from audience.cli.make_demo_data import main

if __name__ == "__main__":
    sys.exit(main())
