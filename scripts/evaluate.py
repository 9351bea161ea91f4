"""Evaluate a checkpoint on one official Adience fold.

    python scripts/evaluate.py runs/<run-id>/fold0/best.safetensors --data ROOT --fold 0
    python scripts/evaluate.py checkpoints/model.json --data demo --fold 0 --json

The label policy and image folder default to the ones the checkpoint was trained with.
Exit status: 0 done, 2 a problem with the input (one `error:` sentence), 1 an internal error (one
line; the traceback on stderr with --debug or AUDIENCE_DEBUG=1).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from audience import settings
from audience.data.adience import IMAGE_MODES, N_FOLDS
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES, GENDER_CLASSES, POLICIES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on one fold of an Adience root.")
    parser.add_argument("checkpoint", help="the checkpoint's .safetensors or .json file")
    parser.add_argument("--data", required=True, help="Adience root, or 'demo' for the synthetic demo dataset")
    parser.add_argument("--fold", type=int, required=True, choices=range(N_FOLDS), metavar=f"0-{N_FOLDS - 1}",
                        help="the official fold to evaluate on")
    parser.add_argument("--policy", choices=POLICIES, help="age label policy (default: the checkpoint's)")
    parser.add_argument("--images", choices=[m for m in IMAGE_MODES if m != "none"],
                        help="image folder (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch (default: 64)")
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
    lines = [f"{result['checkpoint']} ({result['arch']}, {result['task']}) on fold {result['fold']} of "
             f"{result['dataset']}: {result['n']} faces, policy {result['policy']}"]
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from audience.train.evaluation import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(args.checkpoint, args.data, args.fold, policy=args.policy, images=args.images,
                                     batch_size=args.batch_size, device=args.device)
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
