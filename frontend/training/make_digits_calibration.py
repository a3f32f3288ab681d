"""Write ``frontend/weights/digits-calib.npz``: 128 images of the digits training split.

The zoo's digits models draw calibration samples from it, so quantization sees real
inputs without scikit-learn at run time. Run once::

    python frontend/training/make_digits_calibration.py
"""

from __future__ import annotations

import numpy as np

from celosia.frontend.training.common import WEIGHTS, digits_split

COUNT = 128


def main() -> None:
    xtr, _, ytr, _ = digits_split()
    path = WEIGHTS / "digits-calib.npz"
    np.savez_compressed(path, x=xtr[:COUNT].astype(np.float32), y=ytr[:COUNT].astype(np.int64))
    print(f"{COUNT} calibration images -> {path}")


if __name__ == "__main__":
    main()
