"""A tiny, randomly initialised BERT saved as local files: the real text-encoder code path, offline."""

from __future__ import annotations

import string
from pathlib import Path

WORDS = ["chest", "x", "ray", "showing", "pleural", "effusion", "hernia", "mass", "edema", "cardiomegaly"]


def make_tiny_bert(folder: Path, seed: int = 0) -> Path:
    """Save a 1-layer, 32-wide BERT and its WordPiece vocabulary (whole words + letters) into `folder`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = list(string.ascii_lowercase)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "-", "(", ")", *WORDS, *letters, *[f"##{c}" for c in letters]]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    return folder
