"""Export a checkpoint to ONNX and check it against PyTorch with onnxruntime.

The command lives in the package, `python -m audience.cli.export_onnx` (installed: `audience-export-onnx`);
this file keeps `python scripts/export_onnx.py` working as the README types it. `--help` lists the flags.
"""

import sys

from audience.cli.export_onnx import main

if __name__ == "__main__":
    sys.exit(main())
