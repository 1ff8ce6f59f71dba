"""Potentials with exactly known (self-consistent) harmonic behaviour, as ASE calculators.

They are test instruments: a purely harmonic crystal (the SSCHA must return its own
force constants at any temperature) and a simple-cubic lattice of nearest-neighbour
springs with a quartic term, whose SCHA solution is known exactly.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from phonopy.physical_units import get_physical_units
from scipy.optimize import brentq


class HarmonicCalculator(Calculator):
    """E = 1/2 u^T Phi u + E0 about fixed reference positions (Å, eV/Å^2)."""

    implemented_properties = ("energy", "forces")

    def __init__(self, reference: Atoms, force_constants: np.ndarray, energy0: float = 0.0):
        super().__init__()
        self.reference_positions = reference.positions.copy()
        self.force_constants = force_constants
        self.energy0 = energy0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        u = self.atoms.positions - self.reference_positions
        forces = -np.einsum("ijab,jb->ia", self.force_constants, u)
        self.results = {
            "energy": self.energy0 - 0.5 * float(np.sum(forces * u)),
            "forces": forces,
        }


class QuarticSpringCalculator(Calculator):
    """Simple-cubic lattice, V = sum_{<ij>, a} k/2 (u_ia - u_ja)^2 + lam (u_ia - u_ja)^4.

    Nearest neighbours are the six atoms at distance ``lattice_constant``; each pair
    is counted once. ``k`` in eV/Å^2, ``lam`` in eV/Å^4.
    """

    implemented_properties = ("energy", "forces")

    def __init__(self, reference: Atoms, lattice_constant: float, k: float, lam: float):
        super().__init__()
        self.reference_positions = reference.positions.copy()
        self.k, self.lam = k, lam
        distances = reference.get_all_distances(mic=True)
        i, j = np.nonzero(np.triu(np.isclose(distances, lattice_constant, atol=1e-3), 1))
        self.pairs = np.stack([i, j], axis=1)
        if len(self.pairs) != 3 * len(reference):
            raise ValueError("supercell too small: each atom needs 6 distinct neighbours")

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        u = self.atoms.positions - self.reference_positions
        delta = u[self.pairs[:, 0]] - u[self.pairs[:, 1]]
        energy = np.sum(0.5 * self.k * delta**2 + self.lam * delta**4)
        pair_force = -(self.k * delta + 4 * self.lam * delta**3)
        forces = np.zeros_like(u)
        np.add.at(forces, self.pairs[:, 0], pair_force)
        np.add.at(forces, self.pairs[:, 1], -pair_force)
        self.results = {"energy": float(energy), "forces": forces}


def quartic_spring_k_eff_classical(k: float, lam: float, temperature: float, n_cells: int) -> float:
    """Exact classical SCHA spring: [k + sqrt(k^2 + 16 lam kB T (1 - 1/N))] / 2 (eV/Å^2)."""
    kt = get_physical_units().KB * temperature
    return 0.5 * (k + np.sqrt(k**2 + 16 * lam * kt * (1 - 1 / n_cells)))


def quartic_spring_k_eff_quantum(
    k: float, lam: float, temperature: float, mass: float, n: int
) -> float:
    """Exact quantum SCHA spring on an n x n x n supercell (deterministic BZ sum).

    Solves k_eff = k + 12 lam <(u_ia - u_ja)^2> with
    <du^2> = 1/N sum_{q != 0} 2 (1 - cos q_x) hbar / (2 m w_q) coth(hbar w_q / 2 kB T),
    w_q^2 = (k_eff / m) sum_d 4 sin^2(q_d / 2).
    """
    units = get_physical_units()
    q = 2 * np.pi * np.arange(n) / n
    qx, qy, qz = np.meshgrid(q, q, q, indexing="ij")
    shape = 4 * (np.sin(qx / 2) ** 2 + np.sin(qy / 2) ** 2 + np.sin(qz / 2) ** 2)
    bond = 2 * (1 - np.cos(qx))
    mask = shape > 1e-12

    def mean_square_bond(k_eff: float) -> float:
        eigenvalue = k_eff / mass * shape[mask]  # eV / (Å^2 amu)
        energy = np.sqrt(eigenvalue) * units.DefaultToTHz * units.THzToEv  # hbar w in eV
        coth = 1 / np.tanh(energy / (2 * units.KB * temperature)) if temperature > 0 else 1.0
        return float(np.sum(bond[mask] * energy / (2 * mass * eigenvalue) * coth) / n**3)

    return brentq(lambda x: x - k - 12 * lam * mean_square_bond(x), k, 100 * k)


def simple_cubic_force_constants(atoms: Atoms, lattice_constant: float, k_eff: float) -> np.ndarray:
    """Full force constants of nearest-neighbour springs k_eff on each Cartesian component."""
    n = len(atoms)
    distances = atoms.get_all_distances(mic=True)
    neighbours = np.isclose(distances, lattice_constant, atol=1e-3)
    fc = np.zeros((n, n, 3, 3))
    fc[neighbours] = -k_eff * np.eye(3)
    fc[np.arange(n), np.arange(n)] = 6 * k_eff * np.eye(3)
    return fc
