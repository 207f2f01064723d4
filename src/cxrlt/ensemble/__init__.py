"""Test-time augmentation, k-fold training and ensembles of prediction tables.

`merge` (arithmetic / geometric mean), `tta` (views of an image),
`combine` (model-wise and class-wise ensembles of tables), `kfold`
(one model per patient-grouped fold, out-of-fold and averaged test predictions).
"""
