"""Thermal displacements of a supercell from its second-order force constants.

The harmonic crystal described by force constants :math:`\\Phi` at temperature
:math:`T` has Gaussian atomic displacements. In mass-weighted normal coordinates
:math:`q_\\nu = e_\\nu^T M^{1/2} u` each mode is an independent Gaussian with variance

* classical statistics: :math:`\\sigma_\\nu^2 = k_B T / \\omega_\\nu^2`
* quantum statistics:   :math:`\\sigma_\\nu^2 = \\hbar / (2\\omega_\\nu) \\coth(\\hbar\\omega_\\nu / 2 k_B T)`

The three rigid translations of the supercell are never sampled: all displacements
lie in the complement of the translation subspace, which is the same for every set
of force constants that obeys the acoustic sum rule. This makes densities of two
different force-constant sets directly comparable (importance reweighting).

Units are phonopy's: force constants in eV/Å², masses in amu, displacements in Å,
frequencies in THz, temperatures in K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from phonopy.physical_units import get_physical_units

Statistics = Literal["quantum", "classical"]

_UNITS = get_physical_units()
#: sqrt(eV / (Å² amu)) in THz (ordinary frequency): phonopy's "VaspToTHz".
EIGENVALUE_TO_THZ = float(_UNITS.DefaultToTHz)
#: Planck constant times 1 THz, in eV.
THZ_TO_EV = float(_UNITS.THzToEv)
#: Boltzmann constant in eV/K.
KB_EV = float(_UNITS.KB)


def check_temperatures(
    temperatures: float | Sequence[float],
    statistics: Statistics = "quantum",
    positive: bool = False,
) -> list[float]:
    """The temperatures as a list, checked once for every layer (core, Makers, CLI).

    Parameters
    ----------
    temperatures : float or sequence of float
        K.
    statistics : {"quantum", "classical"}
        Classical statistics need T > 0 K (a classical crystal at 0 K does not move).
    positive : bool
        Require T > 0 K (e.g. thermal conductivity).

    Returns
    -------
    list of float

    Raises
    ------
    ValueError
        No temperature, a non-finite or negative one, or 0 K where T > 0 K is needed.
    """
    values = [float(t) for t in np.atleast_1d(np.asarray(temperatures, dtype=float))]
    if not values:
        raise ValueError("at least one temperature is needed")
    if not all(np.isfinite(values)) or min(values) < 0:
        raise ValueError(f"temperatures must be finite and >= 0 K, got {values}")
    if min(values) == 0 and (positive or statistics == "classical"):
        why = "classical statistics" if statistics == "classical" else "this calculation"
        raise ValueError(f"{why} needs temperatures above 0 K, got {values}")
    return values


def translation_complement(masses: NDArray[np.float64]) -> NDArray[np.float64]:
    """Orthonormal basis of mass-weighted coordinates orthogonal to rigid translations.

    Parameters
    ----------
    masses : ndarray, shape (n_atoms,)
        Atomic masses in amu.

    Returns
    -------
    ndarray, shape (3 n_atoms, 3 n_atoms - 3)
        Columns span the vibrational (non-translational) subspace.
    """
    n_atoms = len(masses)
    translations = np.zeros((3 * n_atoms, 3))
    for alpha in range(3):
        translations[alpha::3, alpha] = np.sqrt(masses)
    full, _ = np.linalg.qr(translations, mode="complete")
    return np.ascontiguousarray(full[:, 3:])


def _projected_dynamical_matrix(
    force_constants: NDArray[np.float64],
    masses: NDArray[np.float64],
    complement: NDArray[np.float64] | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Supercell dynamical matrix at Gamma in the translation-free subspace, and that basis.

    Returns the symmetric ``(3N - 3, 3N - 3)`` matrix (eV/(Å² amu)) and ``complement``
    (computed when None).
    """
    n_atoms = len(masses)
    if complement is None:
        complement = translation_complement(masses)
    matrix = force_constants.transpose(0, 2, 1, 3).reshape(3 * n_atoms, 3 * n_atoms)
    matrix = 0.5 * (matrix + matrix.T)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses), 3)
    dynamical = matrix * np.outer(inv_sqrt_m, inv_sqrt_m)
    projected = complement.T @ dynamical @ complement
    return 0.5 * (projected + projected.T), complement


def _to_thz(eigenvalues: NDArray[np.float64]) -> NDArray[np.float64]:
    """Frequencies (THz) of eigenvalues (eV/(Å² amu)), negative for negative eigenvalues."""
    return np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * EIGENVALUE_TO_THZ


def mode_frequencies(
    force_constants: NDArray[np.float64],
    masses: NDArray[np.float64],
    complement: NDArray[np.float64] | None = None,
) -> NDArray[np.float64]:
    """Frequencies (THz, ascending, negative if imaginary) of the supercell modes at Gamma.

    :attr:`NormalModes.frequencies` without the eigenvectors (cheaper; equal to rounding).
    Arguments as in :meth:`NormalModes.from_force_constants`.
    """
    masses = np.asarray(masses, dtype=float)
    projected, _ = _projected_dynamical_matrix(force_constants, masses, complement)
    return _to_thz(np.linalg.eigvalsh(projected))


@dataclass(frozen=True)
class NormalModes:
    """Vibrational normal modes of a supercell, rigid translations excluded.

    Parameters
    ----------
    eigenvalues : ndarray, shape (3N - 3,)
        Eigenvalues of the mass-weighted force constants, eV/(Å² amu); negative for
        imaginary modes.
    eigenvectors : ndarray, shape (3N, 3N - 3)
        Orthonormal mass-weighted eigenvectors (columns).
    masses : ndarray, shape (N,)
        Atomic masses in amu.
    """

    eigenvalues: NDArray[np.float64]
    eigenvectors: NDArray[np.float64]
    masses: NDArray[np.float64]

    @classmethod
    def from_force_constants(
        cls,
        force_constants: NDArray[np.float64],
        masses: NDArray[np.float64],
        complement: NDArray[np.float64] | None = None,
    ) -> NormalModes:
        """Diagonalise the supercell dynamical matrix at Gamma.

        Parameters
        ----------
        force_constants : ndarray, shape (N, N, 3, 3)
            Full supercell force constants in eV/Å².
        masses : ndarray, shape (N,)
            Masses in amu.
        complement : ndarray, optional
            Output of :func:`translation_complement` (recomputed when omitted).
        """
        masses = np.asarray(masses, dtype=float)
        projected, complement = _projected_dynamical_matrix(force_constants, masses, complement)
        eigenvalues, vectors = np.linalg.eigh(projected)
        return cls(eigenvalues, complement @ vectors, masses)

    @property
    def frequencies(self) -> NDArray[np.float64]:
        """Mode frequencies in THz, negative for imaginary modes (phonopy convention)."""
        return _to_thz(self.eigenvalues)

    def variances(
        self,
        temperature: float,
        statistics: Statistics = "quantum",
        min_frequency: float = 0.3,
        max_displacement: float | None = 0.3,
    ) -> NDArray[np.float64]:
        """Variances of the mass-weighted normal coordinates, Å² amu.

        Parameters
        ----------
        temperature : float
            Temperature in K.
        statistics : {"quantum", "classical"}
            Bose-Einstein (with zero-point motion) or classical equipartition.
        min_frequency : float
            Imaginary modes are sampled with their absolute frequency and every mode
            with at least this frequency (THz). This is the defined treatment of the
            soft modes of a high-symmetry phase: they are sampled as stiff as their
            curvature, so the anharmonic potential they explore decides whether the
            self-consistent mode is stabilised.
        max_displacement : float or None
            Largest root-mean-square displacement (Å) that one mode may give any atom.
            Modes near zero frequency (a soft mode crossing zero during the
            iterations) would otherwise throw atoms several Å away; such a mode is
            sampled with this amplitude instead. At a converged, stable solution the
            cap should not bind (see :meth:`ThermalDistribution.n_capped_modes`).
        """
        if statistics not in ("quantum", "classical"):
            raise ValueError(f"statistics must be 'quantum' or 'classical', not {statistics!r}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 K, got {temperature}")
        if statistics == "classical" and temperature == 0:
            raise ValueError("classical statistics need a temperature above 0 K")
        frequencies = np.maximum(np.abs(self.frequencies), min_frequency)
        eigenvalues = (frequencies / EIGENVALUE_TO_THZ) ** 2
        if statistics == "classical":
            return self._capped(KB_EV * temperature / eigenvalues, max_displacement)
        energies = frequencies * THZ_TO_EV  # hbar * omega in eV
        if temperature == 0:
            coth = np.ones_like(energies)
        else:
            coth = 1.0 / np.tanh(energies / (2 * KB_EV * temperature))
        return self._capped(energies / (2 * eigenvalues) * coth, max_displacement)

    def _capped(
        self, variances: NDArray[np.float64], max_displacement: float | None
    ) -> NDArray[np.float64]:
        if max_displacement is None:
            return variances
        return np.minimum(variances, max_displacement**2 / self.largest_atomic_weights)

    @property
    def largest_atomic_weights(self) -> NDArray[np.float64]:
        """Per mode, max over atoms of |e_i|^2 / m_i (1/amu): displacement per unit variance."""
        n_atoms = len(self.masses)
        weights = np.sum(self.eigenvectors.reshape(n_atoms, 3, -1) ** 2, axis=1)
        return np.max(weights / self.masses[:, None], axis=0)


@dataclass(frozen=True)
class ThermalDistribution:
    """Gaussian distribution of supercell displacements of harmonic phonons at T.

    Parameters
    ----------
    modes : NormalModes
        Normal modes of the force constants defining the distribution.
    variances : ndarray, shape (3N - 3,)
        Variances of the mass-weighted normal coordinates (Å² amu).
    """

    modes: NormalModes
    variances: NDArray[np.float64]

    @classmethod
    def from_force_constants(
        cls,
        force_constants: NDArray[np.float64],
        masses: NDArray[np.float64],
        temperature: float,
        statistics: Statistics = "quantum",
        min_frequency: float = 0.3,
        complement: NDArray[np.float64] | None = None,
        max_displacement: float | None = 0.3,
    ) -> ThermalDistribution:
        """Build the distribution of force constants (eV/Å²) at ``temperature`` (K).

        ``min_frequency`` (THz) and ``max_displacement`` (Å) as in
        :meth:`NormalModes.variances`.
        """
        modes = NormalModes.from_force_constants(force_constants, masses, complement)
        return cls(modes, modes.variances(temperature, statistics, min_frequency, max_displacement))

    def n_capped_modes(self, max_displacement: float) -> int:
        """Number of modes sampled at the ``max_displacement`` cap."""
        limit = max_displacement**2 / self.modes.largest_atomic_weights
        return int(np.sum(self.variances >= limit * (1 - 1e-9)))

    @property
    def n_atoms(self) -> int:
        """Number of atoms in the supercell."""
        return len(self.modes.masses)

    def sample(self, n_pairs: int, rng: np.random.Generator) -> NDArray[np.float64]:
        """Draw antithetic displacement pairs.

        Parameters
        ----------
        n_pairs : int
            Number of pairs; ``2 * n_pairs`` snapshots are returned, snapshot
            ``2k + 1`` being the negative of snapshot ``2k``. Odd terms of the
            potential then cancel exactly in the averages.
        rng : numpy.random.Generator
            Source of randomness.

        Returns
        -------
        ndarray, shape (2 n_pairs, N, 3)
            Displacements in Å.
        """
        normal = rng.standard_normal((n_pairs, len(self.variances))) * np.sqrt(self.variances)
        weighted = normal @ self.modes.eigenvectors.T
        displacements = weighted / np.repeat(np.sqrt(self.modes.masses), 3)
        displacements = displacements.reshape(n_pairs, self.n_atoms, 3)
        pairs = np.empty((2 * n_pairs, self.n_atoms, 3))
        pairs[0::2] = displacements
        pairs[1::2] = -displacements
        return pairs

    def log_density(self, displacements: NDArray[np.float64]) -> NDArray[np.float64]:
        """Log probability density of displacements (up to a constant shared by all).

        Parameters
        ----------
        displacements : ndarray, shape (n, N, 3)
            Displacements in Å, orthogonal to rigid translations.
        """
        n = len(displacements)
        weighted = displacements.reshape(n, -1) * np.repeat(np.sqrt(self.modes.masses), 3)
        normal = weighted @ self.modes.eigenvectors
        return -0.5 * np.sum(normal**2 / self.variances, axis=1) - 0.5 * np.sum(
            np.log(self.variances)
        )

    def mean_square_displacements(self) -> NDArray[np.float64]:
        """Mean square displacement of each atom, Å², shape (N,)."""
        vectors = self.modes.eigenvectors.reshape(self.n_atoms, 3, -1)
        msd = np.einsum("iak,k->i", vectors**2, self.variances)
        return msd / self.modes.masses
