"""Evaluate a checkpoint on one fold, or on every labelled image, of an Adience root or a UTKFace folder.

    python -m audience.cli.evaluate runs/<run-id>/fold0/best.safetensors --data ROOT --fold 0
    python -m audience.cli.evaluate checkpoints/model.json --data demo --fold 0 --json
    python -m audience.cli.evaluate checkpoints/model.json --data ../shared/utkface --split all --json

The label policy defaults to the one the checkpoint was trained with, the image folder to auto.
Exit status: 0 done, 2 a problem with the input (one `error:` sentence), 1 an internal error (one
line; the traceback on stderr with --debug or AUDIENCE_DEBUG=1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import traceback

from audience import settings
from audience.cli.arguments import whole_number
from audience.data.adience import IMAGE_MODES, N_FOLDS
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, GENDER_CLASSES, POLICIES
from audience.train.evaluation import SPLITS

MAX_BATCH_SIZE = 1024  # one batch of decoded images and activations must fit in memory



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on one fold, or on every labelled image, "
                                                 "of an Adience root or a UTKFace folder.")
    parser.add_argument("checkpoint", help="the checkpoint's .safetensors or .json file")
    parser.add_argument("--data", required=True,
                        help="Adience root, UTKFace folder, or 'demo' for the synthetic demo dataset")
    parser.add_argument("--split", choices=SPLITS, default=None,
                        help="fold: the faces of --fold; all: every labelled image (default: fold when --fold "
                             "is given)")
    parser.add_argument("--fold", type=int, choices=range(N_FOLDS), metavar=f"0-{N_FOLDS - 1}",
                        help="the fold to evaluate on (official Adience folds; UTKFace's image-level folds)")
    parser.add_argument("--policy", choices=POLICIES, help="age label policy (default: the checkpoint's)")
    parser.add_argument("--images", choices=[m for m in IMAGE_MODES if m != "none"],
                        help="image folder (default: auto, the data root decides)")
    parser.add_argument("--crop", choices=("auto", "whole", "detect"), default="auto",
                        help="whole: classify each image as it is; detect: find the face and cut it with the "
                             "checkpoint's crop geometry, as the Predict path does; auto (default): detect when the "
                             "checkpoint records a crop and was trained on another dataset format")
    parser.add_argument("--batch-size", type=whole_number(1, MAX_BATCH_SIZE), default=64,
                        help=f"images per batch (default: 64; 1 to {MAX_BATCH_SIZE})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an internal error to stderr (also AUDIENCE_DEBUG=1)")
    return parser


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(title: str, classes: tuple[str, ...], confusion: list[list[int]]) -> list[str]:
    width = max(6, *(len(c) + 1 for c in classes))
    lines = [f"{title} confusion (rows: true, columns: predicted)",
             " " * width + "".join(c.rjust(width) for c in classes)]
    for name, row in zip(classes, confusion, strict=True):
        lines.append(name.rjust(width) + "".join(str(v).rjust(width) for v in row))
    return lines


def format_report(result: dict) -> str:
    metrics = result["metrics"]
    where = f"fold {result['fold']} of" if result["split"] == "fold" else "every labelled image of"
    lines = [f"{result['checkpoint']} ({result['arch']}, {result['task']}) on {where} "
             f"{result['dataset']}: {result['n']} faces, policy {result['policy']}, crop: {result['crop']}"]
    if metrics["age_exact"] is not None:
        lines.append(f"age: exact {_percent(metrics['age_exact'])}, 1-off {_percent(metrics['age_one_off'])}, "
                     f"macro F1 {metrics['age_f1']:.3f}, ECE {metrics['age_ece']:.3f} "
                     f"(uncalibrated {result['ece_uncalibrated']['age']:.3f})")
        lines += _table("age", AGE_CLASSES, metrics["age_confusion"])
    if metrics["gender_acc"] is not None:
        lines.append(f"gender: accuracy {_percent(metrics['gender_acc'])} "
                     f"(f/m only {_percent(metrics['gender_acc_fm'])}), macro F1 {metrics['gender_f1']:.3f}, "
                     f"ECE {metrics['gender_ece']:.3f} "
                     f"(uncalibrated {result['ece_uncalibrated']['gender']:.3f})")
        lines += _table("gender", GENDER_CLASSES, metrics["gender_confusion"])
    lines += [f"warning: {note}" for note in result["warnings"]]
    return "\n".join(lines)


@contextlib.contextmanager
def _face_crop(args: argparse.Namespace):
    """The detect-and-crop function --crop asks for (None: whole images), with its detector open meanwhile."""
    from audience.data.formats import detect_format
    from audience.model.checkpoint import read_checkpoint_metadata

    try:
        metadata = read_checkpoint_metadata(args.checkpoint)
        if args.crop == "auto":
            trained_on = (metadata.dataset and metadata.dataset.format) or "adience"
            data_format = "adience" if args.data.strip().lower() == "demo" else detect_format(args.data)
            args.crop = "detect" if metadata.crop is not None and trained_on != data_format else "whole"
    except AudienceError:  # evaluate_checkpoint says what is wrong with the checkpoint or the data, in one sentence
        args.crop, metadata = "whole", None
    if args.crop == "whole":
        yield None
        return
    from audience.faces.align import face_cropper
    from audience.faces.detector import FaceDetector

    with FaceDetector() as detector:
        yield face_cropper(metadata.crop_geometry, metadata.face_alignment, detector)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    split = args.split or ("fold" if args.fold is not None else None)
    if split is None:
        parser.error("give --fold N, or --split all to evaluate on every labelled image")
    if split == "fold" and args.fold is None:
        parser.error("--split fold needs --fold N")
    from audience.train.evaluation import evaluate_checkpoint

    try:
        with _face_crop(args) as face_crop:
            result = evaluate_checkpoint(args.checkpoint, args.data, args.fold if split == "fold" else None,
                                         policy=args.policy, images=args.images, batch_size=args.batch_size,
                                         device=args.device, split=split, face_crop=face_crop)
    except AudienceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - a bug: one line for the user, the traceback with --debug
        if args.debug or settings.debug_enabled():
            traceback.print_exc(file=sys.stderr)
        text = " ".join(str(error).split())[:200]
        print(f"error: internal error ({type(error).__name__}: {text}); run again with --debug to see the traceback",
              file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
