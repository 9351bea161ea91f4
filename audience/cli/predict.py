"""Predict age group and gender of every face in images and folders.

    python -m audience.cli.predict photo.jpg folder/ [--checkpoint FILE] [--json] [--out DIR]
                              [--whole-image] [--tta] [--detector mediapipe|haar] [--max-faces N]

Default checkpoint: the default model, as in the Predict tab (the one you last made the default
with "Use this model" or "Make default", else the shipped real model in checkpoints/); without one,
faces are only detected. --json prints one JSON object per image and line on stdout (progress and
notes go to stderr). Exit code: 0 when every image was read, 1 when any failed (the last line says
how many), 2 for a usage error (no images, unreadable checkpoint).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from audience.cli.arguments import whole_number
from audience.data.images import list_images
from audience.errors import AudienceError
from audience.faces.detector import FaceDetector
from audience.model.catalog import find_default_checkpoint, read_default_choice
from audience.predict.batch import predict_files
from audience.predict.predictor import NO_FACE_NOTE, Predictor

MAX_FACES = 20
MAX_FACES_LIMIT = 500  # each face is a crop in one forward pass: bounded like every other input


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and folders (searched recursively)")
    parser.add_argument(
        "--checkpoint", type=Path, help="a checkpoint .json/.safetensors (default: the Predict tab's default model)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per image and line on stdout")
    parser.add_argument("--out", type=Path, help="write annotated images to this folder")
    parser.add_argument("--whole-image", action="store_true", help="each image is already a face crop: no detection")
    parser.add_argument("--tta", action="store_true", help="average with the mirrored crop (twice the compute)")
    parser.add_argument("--detector", choices=("mediapipe", "haar"), default="mediapipe", help="face detector backend")
    parser.add_argument("--max-faces", type=whole_number(1, MAX_FACES_LIMIT, "between {low} and {high}"),
                        default=MAX_FACES, metavar="N",
                        help=f"classify at most the N largest faces per image ({MAX_FACES}; at most {MAX_FACES_LIMIT})")
    return parser.parse_args(argv)



def _describe(record: dict) -> str:
    if "error" in record:
        return f"{record['image']}: error: {record['error']}"
    faces = record["faces"]
    if not faces:
        return f"{record['image']}: {NO_FACE_NOTE} (--whole-image)"
    lines = [f"{record['image']}: {len(faces)} face{'s' if len(faces) != 1 else ''}"]
    if record.get("note"):
        lines[0] += f" ({record['note']})"
    for number, face in enumerate(faces, 1):
        parts = [f"box {tuple(face['box'])}"]
        if face["score"] is not None:
            parts.append(f"score {face['score']:.2f}")
        for head in ("age", "gender"):
            if face[head] is not None:
                years = f", about {face[head]['years']:.0f}" if face[head].get("years") is not None else ""
                parts.append(f"{head} {face[head]['label']}{years} ({max(face[head]['probs'].values()):.2f})")
        if face["uncertain"]:
            parts.append("uncertain")
        lines.append(f"  face {number}: " + ", ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        images = list_images(args.paths, recursive=True)
        if not images:
            raise AudienceError(f"No images found in {', '.join(args.paths)}.")
        checkpoint = args.checkpoint or find_default_checkpoint()
        detector = FaceDetector(backend=args.detector)
        predictor = Predictor(checkpoint, detector=detector, max_faces=args.max_faces)
    except AudienceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if checkpoint is None:
        print(f"note: {predictor.note}", file=sys.stderr)
    else:
        print(f"checkpoint: {checkpoint}", file=sys.stderr)
        if predictor.note:
            chosen = (" (it is the default model because you chose it with 'Use this model' or 'Make default')"
                      if args.checkpoint is None and checkpoint.name == read_default_choice() else "")
            print(f"note: {predictor.note}{chosen}", file=sys.stderr)
    succeeded = failed = 0
    progress = tqdm(images, unit="image", file=sys.stderr, disable=len(images) < 2 or not sys.stderr.isatty())
    try:
        for record in predict_files(progress, predictor, args.out, args.whole_image, args.tta):
            succeeded += "error" not in record
            failed += "error" in record
            if args.json:
                print(json.dumps(record, allow_nan=False), flush=True)
                if record.get("note"):
                    print(f"note: {record['image']}: {record['note']}", file=sys.stderr)
                if record.get("faces") == []:
                    print(f"note: {record['image']}: {NO_FACE_NOTE} (--whole-image)", file=sys.stderr)
            else:
                progress.write(_describe(record), file=sys.stdout)
    except AudienceError as error:  # e.g. the --out folder is not writable
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        progress.close()
        predictor.close()
        detector.close()
    if failed:
        print(f"error: {failed} of {succeeded + failed} image{'s' if succeeded + failed != 1 else ''} could not be "
              "read (see the lines above); the others were predicted.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
