"""Predict age group and gender of every face in images and folders.

The command lives in the package, `python -m audience.cli.predict` (installed: `audience-predict`);
this file keeps `python scripts/predict.py` working as the README types it. `--help` lists the flags.
"""

import sys

from audience.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
