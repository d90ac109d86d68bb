"""A generated image/mask folder in the generic `root/<split>/{images,masks}` layout, for segmentation tests."""

import PIL.Image
import numpy as np


def write_seg_folder(root, counts=(6, 2, 2), size=40, half=6):
    """Gray images with one bright square each (side 2*half) and its mask; counts = (train, val, test)."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "validation", "test"), counts):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(half + 2, size - half - 2, 2)
            mask[y - half:y + half, x - half:x + half] = 1
            image = (rng.normal(60, 10, (size, size)) + 120 * mask).clip(0, 255).astype(np.uint8)
            PIL.Image.fromarray(image).save(root / split / "images" / f"im{i}.png")
            PIL.Image.fromarray(mask * 255).save(root / split / "masks" / f"im{i}.png")
