"""Write the synthetic demo dataset (procedurally drawn faces in the Adience layout) to a folder.

    python -m audience.cli.make_demo_data --out data/demo [--seed 0] [--subjects 250] [--overwrite]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audience.data.adience import read_adience
from audience.data.demo import DEFAULT_SUBJECTS, MAX_SUBJECTS, MIN_SUBJECTS, make_demo_dataset
from audience.errors import AudienceError
from audience.labels import AGE_CLASSES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other bad input, instead of usage + message
        raise AudienceError(f"{message} (see --help).")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(description="Write the synthetic demo dataset: drawn faces of no real person, in the "
                                 "Adience layout (fold files, aligned/ images, a marker saying it is synthetic).")
    parser.add_argument("--out", required=True, type=Path, help="folder to write (new, empty, or an earlier demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes")
    parser.add_argument("--subjects", type=int, default=DEFAULT_SUBJECTS,
                        help=f"number of drawn people, {MIN_SUBJECTS}..{MAX_SUBJECTS} (default {DEFAULT_SUBJECTS})")
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if the same demo dataset is there")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        root = make_demo_dataset(args.out, seed=args.seed, n_subjects=args.subjects, overwrite=args.overwrite)
        faces = read_adience(root).faces
    except AudienceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    per_fold = faces.groupby("fold").size().reindex(range(5), fill_value=0)
    per_class = faces["age_class"].value_counts()
    print(root)
    print(f"{len(faces)} images of {faces['subject'].nunique()} subjects in {faces['user_id'].nunique()} albums "
          f"(synthetic); rows per fold {' / '.join(str(n) for n in per_fold)}")
    print("age classes: " + ", ".join(f"{name} {per_class.get(i, 0)}" for i, name in enumerate(AGE_CLASSES))
          + f", no class {per_class.get(-1, 0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
