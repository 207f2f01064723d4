"""Data layer: label tables, readers, splits, images, cache, sampling, augmentation."""
