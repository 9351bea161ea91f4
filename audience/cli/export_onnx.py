"""Export a checkpoint to ONNX and check it against PyTorch with onnxruntime.

    python -m audience.cli.export_onnx checkpoints/NAME.json [--out FILE.onnx] [--opset 18]

The default --out is the user's models folder (models/NAME.onnx, not tracked by git).

Outputs `age_logits` / `gender_logits` (dynamic batch); class names, image size, mean, std and
temperature are in the ONNX metadata_props. Exit 1 when the largest difference from PyTorch on
random inputs exceeds --tolerance, 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audience.cli.arguments import positive_finite
from audience.errors import AudienceError
from audience.publish.onnx_export import DEFAULT_OPSET, DEFAULT_TOLERANCE, export_onnx


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the checkpoint's .json or .safetensors")
    parser.add_argument("--out", type=Path, help="the .onnx file to write (default: models/NAME.onnx, AUDIENCE_MODELS)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--tolerance", type=positive_finite, default=DEFAULT_TOLERANCE,
                        help=f"largest allowed |ONNX - PyTorch| logit difference (default: {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--exporter", choices=("auto", "dynamo", "legacy"), default="auto",
                        help="torch.onnx exporter (auto: dynamo when onnxscript is installed)")
    return parser.parse_args(argv)



def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = export_onnx(args.checkpoint, args.out, opset=args.opset, exporter=args.exporter)
    except AudienceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {result.path} ({result.exporter} exporter, opset {args.opset}, outputs {', '.join(result.outputs)})")
    print(f"parity with PyTorch: max abs difference {result.max_abs_diff:.3g} "
          f"(largest logit {result.max_abs_logit:.3g}, tolerance {args.tolerance:g})")
    if not result.passed(args.tolerance):
        print(f"error: the ONNX model differs from PyTorch by {result.max_abs_diff:.3g}, more than "
              f"{args.tolerance:g}.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
