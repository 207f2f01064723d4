"""Run folders and the orchestration that fills them (train, resume, k-fold)."""
