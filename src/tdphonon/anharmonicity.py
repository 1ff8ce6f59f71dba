"""Anharmonicity measures from a thermal ensemble: the score sigma^A of Knoop et al.

F. Knoop, T. A. R. Purcell, M. Scheffler, C. Carbogno, Phys. Rev. Materials 4, 083809
(2020): with forces F of thermally displaced supercells and the forces
F^(2) = -Phi u that force constants Phi predict for the displacements u,

    sigma^A = sqrt( < sum_{I,a} (F_Ia - F^(2)_Ia)^2 > / < sum_{I,a} F_Ia^2 > ),

the averages over the ensemble at temperature T. sigma^A = 0 for a harmonic crystal (with
its own force constants) and grows with the weight of the anharmonic forces; restricted to
the atoms of one element or one Wyckoff site it says where the anharmonicity sits.

The SSCHA ensemble already holds displacements and forces: no new force evaluation is
needed (:meth:`tdphonon.sscha.SSCHA.anharmonicity`). Units: eV/Å, Å, eV/Å².
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from tdphonon.fitting import harmonic_forces

__all__ = ["AnharmonicityScore", "anharmonicity_score"]


@dataclass
class AnharmonicityScore:
    """sigma^A of an ensemble, overall and per group of atoms, with bootstrap errors.

    Attributes
    ----------
    sigma : float
        sigma^A of all atoms (dimensionless).
    sigma_error : float
        Its standard error (bootstrap over antithetic pairs).
    by_group : dict of str to float
        sigma^A of the atoms of each group (e.g. element, or Wyckoff site ``"O 3c"``).
    by_group_error : dict of str to float
        Their standard errors.
    """

    sigma: float
    sigma_error: float
    by_group: dict[str, float] = field(default_factory=dict)
    by_group_error: dict[str, float] = field(default_factory=dict)


def _ratios(
    residual_sq: NDArray[np.float64], force_sq: NDArray[np.float64], weights: NDArray[np.float64]
) -> NDArray[np.float64]:
    """sigma^A per column of (n_snapshots, n_groups) sums of squares, weighted."""
    numerator = weights @ residual_sq
    denominator = weights @ force_sq
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.where(denominator > 0, numerator / denominator, np.nan))


def anharmonicity_score(
    displacements: NDArray[np.float64],
    forces: NDArray[np.float64],
    force_constants: NDArray[np.float64],
    weights: NDArray[np.float64] | None = None,
    groups: Sequence[str] | None = None,
    n_bootstrap: int = 32,
    seed: int = 0,
) -> AnharmonicityScore:
    """sigma^A of snapshots against force constants.

    Parameters
    ----------
    displacements : ndarray, shape (n, N, 3)
        Displacements from the reference positions, Å (antithetic pairs (2k, 2k+1) for the
        bootstrap, as the SSCHA draws them; any even n is resampled by pairs).
    forces : ndarray, shape (n, N, 3)
        Forces on the atoms minus those of the undisplaced supercell, eV/Å.
    force_constants : ndarray, shape (N, N, 3, 3)
        Full supercell force constants, eV/Å² (harmonic, or SSCHA-effective).
    weights : ndarray, shape (n,), optional
        Non-negative snapshot weights (importance weights of a reweighted ensemble).
    groups : sequence of str, length N, optional
        A label per atom (element, Wyckoff site, ...): sigma^A per label too.
    n_bootstrap : int
        Bootstrap resamples of snapshot pairs for the standard errors.
    seed : int
        Seed of the resampling.

    Returns
    -------
    AnharmonicityScore
    """
    displacements = np.asarray(displacements, dtype=float)
    forces = np.asarray(forces, dtype=float)
    n, n_atoms = forces.shape[:2]
    if displacements.shape != forces.shape or force_constants.shape != (n_atoms, n_atoms, 3, 3):
        raise ValueError("displacements, forces and force constants do not match")
    weights = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    harmonic = harmonic_forces(force_constants, displacements)
    residual_sq = np.sum((forces - harmonic) ** 2, axis=2)  # (n, N)
    force_sq = np.sum(forces**2, axis=2)
    labels = sorted(set(groups)) if groups is not None else []
    # columns: all atoms, then each group
    member = np.ones((n_atoms, 1 + len(labels)))
    for column, label in enumerate(labels, start=1):
        member[:, column] = [g == label for g in groups]
    residual_sq, force_sq = residual_sq @ member, force_sq @ member
    values = _ratios(residual_sq, force_sq, weights)

    rng = np.random.default_rng(seed)
    n_pairs = n // 2
    samples = []
    for _ in range(n_bootstrap if n_pairs > 1 else 0):
        counts = np.repeat(rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs)), 2)
        if n % 2:
            counts = np.append(counts, 1)
        samples.append(_ratios(residual_sq, force_sq, weights * counts))
    errors = np.std(samples, axis=0, ddof=1) if samples else np.full_like(values, np.nan)
    return AnharmonicityScore(
        sigma=float(values[0]),
        sigma_error=float(errors[0]),
        by_group={label: float(values[i]) for i, label in enumerate(labels, start=1)},
        by_group_error={label: float(errors[i]) for i, label in enumerate(labels, start=1)},
    )
