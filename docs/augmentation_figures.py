"""Draw one training batch per augmentation group into docs/img/augmentation-<group>.png.

The same 16 aligned 96x96 grayscale faces (the astronaut portrait that `aubench synth` builds its heads from, under
slightly different crops) go through each group with the default magnitudes (`AugmentConfig`) and parameters drawn
exactly as the trainer draws those of training step 0 with seed 0. Top-left of each figure: the group's name. Grayscale PNG.
Usage: python docs/augmentation_figures.py [--out docs/img]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from aubench_cli.config import AugmentConfig
from aubench_cli.training.transforms import build_augmentation, to_float


def faces(n: int = 16) -> np.ndarray:
    import skimage.data

    gray = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2GRAY)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):  # the face sits around x 180-300, y 40-190 of the 512x512 photo
        x0, y0, side = 165 + rng.integers(-6, 7), 35 + rng.integers(-6, 7), 150 + rng.integers(-8, 9)
        out.append(cv2.resize(gray[y0:y0 + side, x0:x0 + side], (96, 96), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def grid(batch: np.ndarray, cols: int = 8, pad: int = 2) -> np.ndarray:
    rows = -(-len(batch) // cols)
    canvas = np.full((rows * (96 + pad) + pad, cols * (96 + pad) + pad), 255, np.uint8)
    for i, img in enumerate(batch):
        r, c = divmod(i, cols)
        canvas[pad + r * (96 + pad):pad + r * (96 + pad) + 96, pad + c * (96 + pad):pad + c * (96 + pad) + 96] = img
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "img"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x = to_float(torch.from_numpy(faces()))
    for group in "ABCD":
        pipeline = build_augmentation(group, AugmentConfig())
        y = x
        if pipeline is not None:
            params = pipeline.sample(np.random.default_rng([0, 6, 0]), len(x))  # the trainer's stream for step 0
            y = pipeline(x, torch.from_numpy(params))
        img = grid((y[:, 0].numpy() * 255).round().astype(np.uint8))
        cv2.putText(img, group, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 0, 4)
        cv2.putText(img, group, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
        cv2.imwrite(str(out / f"augmentation-{group}.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(out / f"augmentation-{group}.png")


if __name__ == "__main__":
    main()
