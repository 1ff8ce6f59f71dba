"""Harmonic force constants with a force calculator.

Plain phonopy/symfc, no workflow code: used by the jobs and usable alone. Relaxation
is atomate2's ``ForceFieldRelaxMaker`` (see :func:`tdphonon.jobs.relax_job`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from phonopy import Phonopy

from tdphonon.potentials import ForceEvaluator
from tdphonon.structures import supercell_atoms


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
