"""Relaxation and harmonic force constants with a force calculator.

Plain ASE/phonopy, no workflow code: used by the jobs and usable alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from phonopy import Phonopy
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from tdphonon.sscha import ForceEvaluator, supercell_atoms


@dataclass
class RelaxationResult:
    """Relaxed structure with the energy (eV/atom) and residual force (eV/Å)."""

    structure: Structure
    energy_per_atom: float
    max_force: float
    n_steps: int
    converged: bool


def relax_structure(
    structure: Structure,
    ase_calculator,
    fmax: float = 1e-3,
    relax_cell: bool = True,
    max_steps: int = 1000,
) -> RelaxationResult:
    """Relax positions (and cell) keeping the space group (ase FixSymmetry).

    Parameters
    ----------
    structure : Structure
        Starting structure.
    ase_calculator : ase.calculators.calculator.Calculator
        Calculator providing energy, forces and stress.
    fmax : float
        Force criterion in eV/Å (the cell filter includes stress).
    relax_cell : bool
        Relax the lattice too (FrechetCellFilter).
    max_steps : int
        Maximum optimiser steps.
    """
    from ase.constraints import FixSymmetry
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS

    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = ase_calculator
    atoms.set_constraint(FixSymmetry(atoms, symprec=1e-3))
    target = FrechetCellFilter(atoms) if relax_cell else atoms
    optimizer = BFGS(target, logfile=None)
    converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
    atoms.set_constraint()
    forces = atoms.get_forces()
    relaxed = AseAtomsAdaptor.get_structure(atoms)
    return RelaxationResult(
        structure=relaxed,
        energy_per_atom=float(atoms.get_potential_energy() / len(atoms)),
        max_force=float(np.linalg.norm(forces, axis=1).max()),
        n_steps=int(optimizer.get_number_of_steps()),
        converged=converged,
    )


@dataclass
class HarmonicResult:
    """Harmonic force constants (full supercell, eV/Å²) and the reference supercell.

    ``reference_energy`` (eV) and ``reference_forces`` (N, 3; eV/Å) belong to the
    undisplaced supercell and are subtracted from the displaced forces (residual
    forces of a structure that is not exactly at equilibrium).
    """

    force_constants: NDArray[np.float64]
    displacements: NDArray[np.float64]
    forces: NDArray[np.float64]
    reference_energy: float
    reference_forces: NDArray[np.float64]
    n_force_evaluations: int


def harmonic_force_constants(
    phonon: Phonopy,
    calculator: ForceEvaluator,
    displacement: float = 0.01,
    progress: bool = False,
) -> HarmonicResult:
    """Finite-displacement force constants (phonopy displacements, symfc fit).

    Sets ``phonon.force_constants`` (full) and returns them with the data.

    Parameters
    ----------
    phonon : Phonopy
        Crystal with its supercell.
    calculator : ForceEvaluator
        Energies and forces of supercells.
    displacement : float
        Displacement amplitude in Å.
    progress : bool
        Show a progress bar.
    """
    phonon.generate_displacements(distance=displacement, is_plusminus=True)
    entries = phonon.dataset["first_atoms"]
    displacements = np.zeros((len(entries), len(phonon.supercell), 3))
    for row, entry in zip(displacements, entries, strict=True):
        row[entry["number"]] = entry["displacement"]
    structures = supercell_atoms(phonon) + supercell_atoms(phonon, displacements)
    energies, forces = calculator.compute(structures, progress=progress)
    reference_forces = forces[0]
    phonon.forces = forces[1:] - reference_forces
    phonon.produce_force_constants(
        fc_calculator="symfc", calculate_full_force_constants=True, show_drift=False
    )
    return HarmonicResult(
        force_constants=np.array(phonon.force_constants),
        displacements=displacements,
        forces=forces[1:],
        reference_energy=float(energies[0]),
        reference_forces=reference_forces,
        n_force_evaluations=len(structures),
    )
