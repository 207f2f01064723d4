"""`cxrlt ...` for the multi-process tests, recording which training rows each rank draws.

Run as a script (by the test, by Lightning's launcher re-running the same
command for the other ranks, or by torchrun): it wraps the training step so
that every batch's row indices are appended to
$CXRLT_TEST_RECORD/rank<R>.jsonl as {"stage": "01-main", "epoch": E, "rows": [...]}, then runs
the CLI with the script's arguments.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cxrlt.cli import main
from cxrlt.training.module import ClassifierModule

_step = ClassifierModule.training_step


def _recording_step(self, batch, batch_idx):
    record = Path(os.environ["CXRLT_TEST_RECORD"])
    with open(record / f"rank{self.global_rank}.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"stage": Path(self.trainer.default_root_dir).name, "epoch": self.current_epoch,
                                 "rows": batch[2].tolist()}) + "\n")
    return _step(self, batch, batch_idx)


if __name__ == "__main__":
    ClassifierModule.training_step = _recording_step
    sys.exit(main(sys.argv[1:]))
