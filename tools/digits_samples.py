"""Write a few of scikit-learn's handwritten digits as PNG files (real images for the demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from resnet_edge.data import load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    digits = load_digits((args.size, args.size)).sample(args.count, seed=1)
    args.folder.mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(digits.images, digits.labels, strict=True)):
        Image.fromarray(image).save(args.folder / f"digit{index}_label{label}.png")
    print(f"wrote {len(digits)} digit images to {args.folder}")


if __name__ == "__main__":
    main()
