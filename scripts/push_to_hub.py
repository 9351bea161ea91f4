"""Publish a checkpoint (safetensors + JSON + a generated model card) to a Hugging Face Hub model repo.

The command lives in the package, `python -m audience.cli.push_to_hub` (installed: `audience-push-to-hub`);
this file keeps `python scripts/push_to_hub.py` working as the README types it. `--help` lists the flags.
"""

import sys

from audience.cli.push_to_hub import main

if __name__ == "__main__":
    sys.exit(main())
