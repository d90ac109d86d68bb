"""Grain pipelines from a split's records to model batches: decode, resize, normalise, augment
(classification: `batches`; image/mask patches: `segmentation`), and balanced epoch orders (`sampling`).
"""
