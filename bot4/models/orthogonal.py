"""Orthogonalisation of the feature vector: fitted offline, applied in the signals kernel.

A transform is ``z = W @ (x - mean)``, with ``W`` chosen so that ``z`` has identity
covariance on the fitting data:

* ``pca`` — ``W = diag(1/sqrt(lambda)) V^T`` from the eigendecomposition of the covariance
  (components ordered by variance);
* ``qr`` — Gram-Schmidt in the features' own order: ``X_c = Q R`` gives
  ``W = sqrt(n-1) R^-T`` (signal k is feature k with features 1..k-1 regressed out);
* ``ica`` — PCA whitening, then a symmetric FastICA rotation (tanh contrast), so the
  signals are also as independent as a rotation can make them. Still identity covariance.

Rows with a non-finite feature are left out of the fit. Near-zero variance directions are
floored (``eps``) so W stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("pca", "qr", "ica")


@dataclass(frozen=True)
class Orthogonaliser:
    method: str
    mean: np.ndarray  # (F,)
    W: np.ndarray  # (F, F), row k = signal k

    def apply(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean) @ self.W.T

    def to_dict(self) -> dict:
        return {"method": self.method, "mean": self.mean.tolist(), "W": self.W.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Orthogonaliser:
        mean = np.asarray(d["mean"], np.float64)
        W = np.asarray(d["W"], np.float64)
        if W.shape != (mean.size, mean.size):
            raise ValueError(
                f"orthogonaliser W has shape {W.shape}, expected {(mean.size, mean.size)}"
            )
        return cls(d["method"], mean, W)

    @classmethod
    def identity(cls, n: int) -> Orthogonaliser:
        return cls("identity", np.zeros(n), np.eye(n))


def _fastica_rotation(Z: np.ndarray, seed: int, iters: int = 200, tol: float = 1e-8) -> np.ndarray:
    n, f = Z.shape
    rng = np.random.default_rng(seed)
    R, _ = np.linalg.qr(rng.standard_normal((f, f)))
    for _ in range(iters):
        Y = Z @ R.T
        G = np.tanh(Y)
        Gp = 1.0 - G * G
        R_new = (G.T @ Z) / n - Gp.mean(axis=0)[:, None] * R
        u, _, vt = np.linalg.svd(R_new)
        R_new = u @ vt  # symmetric decorrelation keeps it a rotation
        if np.max(np.abs(np.abs(np.diag(R_new @ R.T)) - 1.0)) < tol:
            R = R_new
            break
        R = R_new
    return R


def fit_orthogonaliser(
    X: np.ndarray, method: str = "pca", *, eps: float = 1e-12, seed: int = 0
) -> Orthogonaliser:
    """Fit on feature rows ``X`` (n x F)."""
    if method not in METHODS:
        raise ValueError(f"orthogonalisation method {method!r}: expected one of {METHODS}")
    X = np.asarray(X, np.float64)
    X = X[np.all(np.isfinite(X), axis=1)]
    n, f = X.shape
    if n <= f:
        raise ValueError(f"need more than {f} complete feature rows to fit, got {n}")
    mean = X.mean(axis=0)
    Xc = X - mean
    if method == "qr":
        _, R = np.linalg.qr(Xc)
        d = np.where(np.abs(np.diag(R)) < np.sqrt(eps * n), np.sqrt(eps * n), np.diag(R))
        R = R - np.diag(np.diag(R)) + np.diag(d)
        W = np.sqrt(n - 1) * np.linalg.inv(R).T
        return Orthogonaliser("qr", mean, W)
    cov = Xc.T @ Xc / (n - 1)
    lam, V = np.linalg.eigh(cov)
    order = np.argsort(lam)[::-1]
    lam, V = np.maximum(lam[order], eps), V[:, order]
    W = (V / np.sqrt(lam)).T
    if method == "ica":
        R = _fastica_rotation(Xc @ W.T, seed)
        W = R @ W
    return Orthogonaliser(method, mean, W)
