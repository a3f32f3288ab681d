"""Write ``frontend/weights/digits-test.npz``: the 360-image test split of the 8x8 digits.

``celosia compile vit-digits`` runs it through the RTL and reports ``rtl_accuracy``, so the test
set ships with the package (no scikit-learn at run time). Run once::

    python frontend/training/make_digits_test.py
"""

from __future__ import annotations

import numpy as np

from celosia.frontend.training.common import WEIGHTS, digits_split


def main() -> None:
    _, xte, _, yte = digits_split()
    path = WEIGHTS / "digits-test.npz"
    # pixels are multiples of 1/16: 4-bit codes hold them exactly
    np.savez_compressed(path, x=np.round(xte * 16).astype(np.uint8), y=yte.astype(np.int64))
    print(f"{len(yte)} test images -> {path}")


if __name__ == "__main__":
    main()
