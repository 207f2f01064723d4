"""Models: timm backbone -> pooling -> head, built from the config."""
