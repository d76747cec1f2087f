"""Similarity measures shared by the parity check and the layer-wise diagnosis."""

from __future__ import annotations

import numpy as np


def row_cosine(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity per row; two zero rows agree (1.0), one zero row does not (0.0)."""
    dots = (reference * candidate).sum(axis=1)
    ref_norm, cand_norm = np.linalg.norm(reference, axis=1), np.linalg.norm(candidate, axis=1)
    both_zero = (ref_norm == 0) & (cand_norm == 0)
    cosine = dots / np.maximum(ref_norm * cand_norm, 1e-30)
    return np.where(both_zero, 1.0, cosine)
