"""The training engine: the Lightning module and data module, stages, optimisers and schedules, checkpoints, tau."""

from __future__ import annotations

import logging


def quiet_lightning() -> None:
    """Lower Lightning's start-up chatter to warnings.

    Lightning sets its own loggers to INFO when imported; the commands that
    train call this right before they do.
    """
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
