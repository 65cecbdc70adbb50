"""Reads back the file phdf5_write produced, with h5py, and checks every value and the writer count."""
import sys

import h5py
import numpy as np

path, ranks, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with h5py.File(path, "r") as f:
    x = f["x"][...]
    writers = int(f.attrs["writers"])
expect = np.concatenate([r * 1e6 + np.arange(rows * cols, dtype=np.float64).reshape(rows, cols)
                         for r in range(ranks)])
if writers != ranks or x.shape != expect.shape or not np.array_equal(x, expect):
    sys.exit(f"h5py: {path}: writers={writers} shape={x.shape}, expected {ranks} writers and {expect.shape}"
             " with each rank's rows")
print(f"h5py OK: {path}: {x.shape[0]}x{x.shape[1]} values from {writers} ranks match")
