"""Symmetry-adapted least-squares fitting of second-order force constants.

The effective (SSCHA) force constants are the least-squares solution of
:math:`F_s = -\\Phi u_s` over thermal snapshots :math:`s`. For Gaussian snapshots
this equals the thermal average of the Hessian (Stein's lemma), which is the SCHA
self-consistency condition. The fit is done in symfc's basis of force constants that
obey the space-group symmetry, index permutation and the acoustic sum rule:
:math:`\\Phi = \\sum_k c_k B_k`.

The model is linear, so the fit solves the normal equations
:math:`(\\sum_s w_s X_s^T X_s) c = \\sum_s w_s X_s^T F_s` with the design matrix
:math:`X_s = -(B_1 u_s, B_2 u_s, \\dots)` of snapshot :math:`s` and its weight
:math:`w_s` (symfc's ``FCSolverO2`` builds the same normal equations, for one set of
weights). :meth:`ForceConstantFitter.fit_many` builds each snapshot's contribution
:math:`X_s^T X_s`, :math:`X_s^T F_s` once and then the normal equations of any number of
weight vectors as weighted sums of them: a bootstrap resample of the snapshots is a
vector of integer multiplicities times the weights, so all resamples of an SSCHA
iteration cost one pass over the data and one small linear solve each, and give the same
numbers as refitting each resample from scratch.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from phonopy.structure.atoms import PhonopyAtoms
from scipy.sparse import csr_array
from symfc.basis_sets import FCBasisSetO2
from symfc.utils.solver_funcs import get_batch_slice, solve_linear_equation
from symfc.utils.solver_utils_O2 import reshape_compr_mat_O2
from symfc.utils.utils import SymfcAtoms

#: Memory (bytes) for the design matrices of a chunk of snapshots, ``(n, 3N, n_parameters)``,
#: held at once (the map from displacements to them is rebuilt once per chunk when it is
#: not kept, see :data:`DESIGN_MAP_BYTES`).
NORMAL_EQUATION_BYTES = 128 * 2**20
#: Memory (bytes) for the per-snapshot normal matrices ``(n, n_parameters, n_parameters)``
#: held at once.
GRAM_BYTES = 64 * 2**20
#: Largest map from displacements to design matrices (all atoms) kept per supercell, bytes;
#: above it the map is rebuilt per batch of atoms at each fit.
DESIGN_MAP_BYTES = 256 * 2**20


def harmonic_forces(
    force_constants: NDArray[np.float64], displacements: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Forces :math:`-\\Phi u` (eV/Å) of force constants ``(N, N, 3, 3)`` (eV/Å²) for
    displacements ``(n, N, 3)`` (Å): the model the fit fits, as one matrix product."""
    n_atoms = force_constants.shape[0]
    matrix = force_constants.transpose(0, 2, 1, 3).reshape(3 * n_atoms, 3 * n_atoms)
    flat = np.asarray(displacements, dtype=float).reshape(-1, 3 * n_atoms)
    return -(flat @ matrix.T).reshape(np.shape(displacements))


class ForceConstantFitter:
    """Fit full supercell force constants to (displacement, force) snapshots.

    The symmetry basis and the matrices that map displacements onto it are computed once
    per supercell and reused for every fit (SSCHA iterations, bootstrap resamples).

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
        return int(self.basis.shape[1])

    @cached_property
    def basis(self) -> NDArray[np.float64]:
        """The symmetry-adapted basis in symfc's compressed space, ``(n_compr, n_parameters)``."""
        return np.ascontiguousarray(self._basis.basis_set)

    @cached_property
    def _compression(self) -> csr_array:
        """``(N*N*9, n_compr)``: compressed space -> full force constants."""
        return csr_array(self._basis.compression_matrix)

    def _atom_batches(self) -> list[tuple[int, int]]:
        """Batches of atoms ``(i0, i1)`` of symfc's ``prepare_normal_equation_O2``."""
        n_batch = max(self.n_atoms // 10, 1)
        begins, ends = get_batch_slice(self.n_atoms, self.n_atoms // n_batch)
        return list(zip(begins, ends, strict=True))

    def _design_map(self, i0: int, i1: int) -> NDArray[np.float64]:
        """``(3N, 3 (i1 - i0) n_parameters)``: a flattened snapshot ``u`` (3N,) times it,
        reshaped to ``(3 (i1 - i0), n_parameters)``, is minus the design matrix of the forces
        on atoms ``i0:i1``. Built from symfc's compact compression matrix as symfc's solver
        builds its normal equations."""
        n, basis = self.n_atoms, self.basis
        block = reshape_compr_mat_O2(
            self._basis.compact_compression_matrix, self._basis.atomic_decompr_idx, n, i0, i1
        )  # (3N, 3 (i1 - i0) n_compr)
        rows = csr_array(block).reshape((3 * n * 3 * (i1 - i0), basis.shape[0]))
        return np.asarray(rows @ basis).reshape(3 * n, -1)

    @cached_property
    def _cached_design_map(self) -> NDArray[np.float64] | None:
        """All atoms' design map ``(3N, 3N n_parameters)`` when it fits in
        :data:`DESIGN_MAP_BYTES` (then a whole design is one matrix product), else None."""
        if 8 * 9 * self.n_atoms**2 * self.n_parameters > DESIGN_MAP_BYTES:
            return None
        return np.hstack([self._design_map(i0, i1) for i0, i1 in self._atom_batches()])

    def _design_maps(self) -> Iterator[tuple[int, int, NDArray[np.float64]]]:
        """``(i0, i1, design map)`` over batches of atoms (one batch when cached)."""
        if self._cached_design_map is not None:
            yield 0, self.n_atoms, self._cached_design_map
            return
        for i0, i1 in self._atom_batches():
            yield i0, i1, self._design_map(i0, i1)

    def _check(
        self, displacements: NDArray[np.float64], forces: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        displacements = np.asarray(displacements, dtype=float)
        forces = np.asarray(forces, dtype=float)
        if displacements.shape != forces.shape or displacements.shape[1:] != (self.n_atoms, 3):
            raise ValueError(
                f"displacements {displacements.shape} and forces {forces.shape} must both "
                f"have shape (n_snapshots, {self.n_atoms}, 3)"
            )
        return displacements, forces

    def normal_equations(
        self,
        displacements: NDArray[np.float64],
        forces: NDArray[np.float64],
        weights: NDArray[np.float64],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Normal equations of the weighted fit, for several weight vectors at once.

        Parameters
        ----------
        displacements : ndarray, shape (n, N, 3)
            Displacements from the reference positions, Å.
        forces : ndarray, shape (n, N, 3)
            Forces on the atoms minus those of the undisplaced supercell, eV/Å.
        weights : ndarray, shape (m, n)
            ``m`` vectors of non-negative snapshot weights.

        Returns
        -------
        matrices : ndarray, shape (m, n_parameters, n_parameters)
            :math:`\\sum_s w_s X_s^T X_s` for each weight vector.
        vectors : ndarray, shape (m, n_parameters)
            :math:`\\sum_s w_s X_s^T F_s`.
        """
        displacements, forces = self._check(displacements, forces)
        weights = np.atleast_2d(np.asarray(weights, dtype=float))
        n = len(displacements)
        if weights.shape[1] != n:
            raise ValueError(f"weights {weights.shape} do not match {n} snapshots")
        n_parameters, n_rows = self.n_parameters, 3 * self.n_atoms
        u = displacements.reshape(n, -1)
        f = forces.reshape(n, -1)
        matrices = np.zeros((len(weights), n_parameters, n_parameters))
        vectors = np.zeros((len(weights), n_parameters))
        chunk = max(1, min(n, NORMAL_EQUATION_BYTES // (8 * n_rows * n_parameters)))
        block = max(1, min(chunk, GRAM_BYTES // (8 * n_parameters**2)))
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            # whole design matrices -X_s (3N, P), so that X_s^T X_s is one product over 3N
            # rows (several times faster than summing products over batches of atoms)
            design = np.empty((stop - start, n_rows * n_parameters))
            for i0, i1, design_map in self._design_maps():
                columns = slice(3 * i0 * n_parameters, 3 * i1 * n_parameters)
                np.matmul(u[start:stop], design_map, out=design[:, columns])
            design = design.reshape(stop - start, n_rows, n_parameters)
            for first in range(start, stop, block):
                last = min(stop, first + block)
                x = design[first - start : last - start]
                transposed = x.transpose(0, 2, 1)
                gram = (transposed @ x).reshape(last - first, -1)  # each X_s^T X_s
                matrices += (weights[:, first:last] @ gram).reshape(matrices.shape)
                vectors -= weights[:, first:last] @ (transposed @ f[first:last, :, None])[..., 0]
        return matrices, vectors

    def force_constants(self, coefficients: NDArray[np.float64]) -> NDArray[np.float64]:
        """Full force constants ``(..., N, N, 3, 3)`` (eV/Å²) of basis coefficients ``(..., n_parameters)``."""
        coefficients = np.asarray(coefficients, dtype=float)
        flat = coefficients.reshape(-1, coefficients.shape[-1])
        full = np.array([self._compression @ (self.basis @ c) for c in flat])  # (m, N*N*9)
        n = self.n_atoms
        return full.reshape(*coefficients.shape[:-1], n, n, 3, 3)

    def fit_many(
        self,
        displacements: NDArray[np.float64],
        forces: NDArray[np.float64],
        weights: NDArray[np.float64],
    ) -> NDArray[np.float64]:
        """Least-squares force constants for each of several weight vectors.

        The same as :meth:`fit` with each row of ``weights`` (e.g. the importance weights
        times the multiplicities of a bootstrap resample), for the cost of about one fit.

        Parameters
        ----------
        displacements, forces : ndarray, shape (n, N, 3)
            As in :meth:`fit`.
        weights : ndarray, shape (m, n)
            Non-negative weights; every row needs a positive weight.

        Returns
        -------
        ndarray, shape (m, N, N, 3, 3)
            Full supercell force constants in eV/Å², one per row of ``weights``.
        """
        weights = np.atleast_2d(np.asarray(weights, dtype=float))
        if not np.all(weights >= 0):
            raise ValueError("snapshot weights must be non-negative")
        if not np.all(weights.max(axis=1, initial=0) > 0):
            raise ValueError("no snapshot with a positive weight to fit force constants to")
        matrices, vectors = self.normal_equations(displacements, forces, weights)
        coefficients = np.array(
            [solve_linear_equation(a, b) for a, b in zip(matrices, vectors, strict=True)]
        )
        return self.force_constants(coefficients)

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
        displacements, forces = self._check(displacements, forces)
        weights = np.ones(len(displacements)) if weights is None else np.asarray(weights)
        if len(displacements) == 0:
            raise ValueError("no snapshot with a positive weight to fit force constants to")
        return self.fit_many(displacements, forces, weights[None, :])[0]
