"""Publish a checkpoint (safetensors + JSON + a generated model card) to a Hugging Face Hub model repo.

    python -m audience.cli.push_to_hub checkpoints/NAME.json --repo USER/NAME [--private]
    python -m audience.cli.push_to_hub runs/<run-id>/fold0/best.json --repo USER/NAME --dry-run OUTDIR

--dry-run writes model.safetensors, model.json and README.md into OUTDIR without any network.
Publishing needs a write token (`hf auth login` or HF_TOKEN). The app serves the result with
AUDIENCE_MODEL_REPO=USER/NAME.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audience.errors import AudienceError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="the checkpoint's .json or .safetensors")
    parser.add_argument("--repo", required=True, help="Hub model repo id, USER/NAME (created when missing)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", metavar="OUTDIR", type=Path,
                        help="write the files that would be published into OUTDIR; no network")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from audience.publish.hub_push import push_checkpoint, stage_checkpoint

    try:
        try:
            validate_repo_id(args.repo)
        except HFValidationError:
            raise AudienceError(f"--repo {args.repo!r} is not a Hub repo id such as user/model-name.") from None
        if args.dry_run is not None:
            out = stage_checkpoint(args.checkpoint, args.dry_run, args.repo)
            print(f"wrote model.safetensors, model.json and README.md to {out} (dry run, nothing published)")
            return 0
        url = push_checkpoint(args.checkpoint, args.repo, private=args.private)
    except AudienceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"published {args.checkpoint} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
