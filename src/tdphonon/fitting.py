"""Symmetry-adapted least-squares fitting of second-order force constants.

The effective (SSCHA) force constants are the least-squares solution of
:math:`F_s = -\\Phi u_s` over thermal snapshots :math:`s`. For Gaussian snapshots
this equals the thermal average of the Hessian (Stein's lemma), which is the SCHA
self-consistency condition. The fit is done in symfc's basis of force constants that
obey the space-group symmetry, index permutation and the acoustic sum rule.

Per-snapshot weights enter as a weighted least-squares problem. The model is linear
and homogeneous in the displacements, so a weight :math:`w_s` is applied by scaling
the snapshot's displacements and forces by :math:`\\sqrt{w_s}`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from phonopy.structure.atoms import PhonopyAtoms
from symfc.basis_sets import FCBasisSetO2
from symfc.solvers import FCSolverO2
from symfc.utils.utils import SymfcAtoms


class ForceConstantFitter:
    """Fit full supercell force constants to (displacement, force) snapshots.

    The symmetry basis is computed once per supercell and reused for every fit
    (SSCHA iterations, bootstrap resamples).

    Parameters
    ----------
    supercell : PhonopyAtoms
        The undisplaced supercell.
    symprec : float
        Symmetry tolerance in Å passed to symfc.
    """

    def __init__(self, supercell: PhonopyAtoms, symprec: float = 1e-5) -> None:
        atoms = SymfcAtoms(
            numbers=supercell.numbers,
            scaled_positions=supercell.scaled_positions,
            cell=supercell.cell,
        )
        self.n_atoms = len(supercell)
        self._basis = FCBasisSetO2(atoms, symprec=symprec).run()

    @property
    def n_parameters(self) -> int:
        """Number of independent force-constant parameters after symmetrisation."""
        return int(self._basis.basis_set.shape[1])

    def fit(
        self,
        displacements: NDArray[np.float64],
        forces: NDArray[np.float64],
        weights: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """Least-squares force constants.

        Parameters
        ----------
        displacements : ndarray, shape (n, N, 3)
            Displacements from the reference positions, Å.
        forces : ndarray, shape (n, N, 3)
            Forces on the atoms minus those of the undisplaced supercell, eV/Å.
        weights : ndarray, shape (n,), optional
            Non-negative snapshot weights (default: all equal).

        Returns
        -------
        ndarray, shape (N, N, 3, 3)
            Full supercell force constants in eV/Å².
        """
        displacements = np.asarray(displacements, dtype=float)
        forces = np.asarray(forces, dtype=float)
        if displacements.shape != forces.shape or displacements.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"displacements {displacements.shape} and forces {forces.shape} must both "
                f"have shape (n_snapshots, {self.n_atoms}, 3)"
            )
        if weights is not None:
            weights = np.asarray(weights, dtype=float)
            keep = weights > 0
            scale = np.sqrt(weights[keep])[:, None, None]
            displacements = displacements[keep] * scale
            forces = forces[keep] * scale
        if len(displacements) == 0:
            raise ValueError("no snapshot with a positive weight to fit force constants to")
        solver = FCSolverO2(self._basis).solve(
            np.ascontiguousarray(displacements), np.ascontiguousarray(forces)
        )
        return solver.full_fc
