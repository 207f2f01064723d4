"""`cxrlt push`: upload a trained model to the Hugging Face hub."""

from __future__ import annotations

import argparse

HELP = "upload a trained model (weights, model card, exports) to the Hugging Face hub"
DESCRIPTION = """
RUN is a finished run folder or an export folder. The upload holds the
saved model (model.safetensors, model.json), the model card README.md (with
hub metadata), and an ONNX export with its sidecar (made now when the folder
has none). Authentication is huggingface_hub's (HF_TOKEN or `hf auth login`).
--dry-run lists what would be sent and sends nothing. Anyone can then run
`cxrlt predict hf-hub:OWNER/NAME IMAGES`.
"""
EXAMPLE = """
cxrlt push runs/demo --repo my-lab/cxrlt-demo --private --dry-run
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cxrlt push`."""
    parser.add_argument("run", metavar="RUN", help="finished run folder or export folder")
    parser.add_argument("--repo", required=True, metavar="OWNER/NAME", help="hub model repository")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry-run", action="store_true", help="list the files and arguments; upload nothing")


def run(args: argparse.Namespace) -> int:
    """Stage the files, then upload them (or list them)."""
    from cxrlt.inference.publish import push

    plan = push(args.run, args.repo, private=args.private, dry_run=args.dry_run)
    verb = "would upload" if args.dry_run else "uploaded"
    print(f"{verb} {len(plan.files)} files to https://huggingface.co/{plan.repo_id} "
          f"({'private' if plan.private else 'public'}):")
    for name in plan.files:
        print(f"  {name}")
    return 0
