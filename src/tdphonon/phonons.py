"""Phonon band structures, densities of states and stability from force constants.

The crystal is always in its standard primitive setting (see
:func:`tdphonon.structures.standard_primitive`), so the Setyawan-Curtarolo band path
of pymatgen applies directly. Frequencies in THz.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray
from phonopy import Phonopy
from pymatgen.io.phonopy import get_pmg_structure
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.dos import PhononDos
from pymatgen.symmetry.bandstructure import HighSymmKpath

from tdphonon.structures import image_distance

#: Modes below this frequency (THz) count as imaginary (numerical noise tolerance).
IMAGINARY_TOLERANCE = -0.05


@dataclass
class PhononSpectrum:
    """Band structure, DOS and stability of one set of force constants."""

    band_structure: PhononBandStructureSymmLine
    dos: PhononDos
    labelled_frequencies: dict[str, list[float]]
    min_frequency: float
    has_imaginary_modes: bool


def _with_force_constants(phonon: Phonopy, force_constants: NDArray[np.float64]) -> Phonopy:
    copy = Phonopy(
        phonon.unitcell,
        supercell_matrix=phonon.supercell_matrix,
        primitive_matrix=phonon.primitive_matrix,
        symprec=phonon.symmetry.tolerance,
    )
    if phonon.nac_params is not None:
        copy.nac_params = phonon.nac_params
    copy.force_constants = force_constants
    return copy


def band_structure(
    phonon: Phonopy, force_constants: NDArray[np.float64], points_per_segment: int = 51
) -> PhononBandStructureSymmLine:
    """Band structure along the standard high-symmetry path."""
    phonon = _with_force_constants(phonon, force_constants)
    structure = get_pmg_structure(phonon.primitive)
    kpath = HighSymmKpath(structure, path_type="setyawan_curtarolo", symprec=1e-3)
    coords = kpath.kpath["kpoints"]
    segments, labels_dict = [], {}
    for branch in kpath.kpath["path"]:
        for start, end in pairwise(branch):
            segments.append(np.linspace(coords[start], coords[end], points_per_segment).tolist())
        for label in branch:
            labels_dict[label] = np.asarray(coords[label])
    connections = [True] * len(segments)
    phonon.run_band_structure(segments, path_connections=connections, with_eigenvectors=False)
    result = phonon.get_band_structure_dict()
    qpoints = np.concatenate(result["qpoints"])
    frequencies = np.concatenate(result["frequencies"]).T
    return PhononBandStructureSymmLine(
        qpoints,
        frequencies,
        structure.lattice.reciprocal_lattice,
        labels_dict=labels_dict,
        structure=structure,
    )


def density_of_states(
    phonon: Phonopy, force_constants: NDArray[np.float64], mesh: float = 50.0
) -> PhononDos:
    """Total phonon DOS (tetrahedron method) on a length-based q-mesh."""
    phonon = _with_force_constants(phonon, force_constants)
    phonon.run_mesh(mesh)
    phonon.run_total_dos()
    dos = phonon.get_total_dos_dict()
    return PhononDos(dos["frequency_points"], dos["total_dos"])


def labelled_frequencies(band_structure: PhononBandStructureSymmLine) -> dict[str, list[float]]:
    """Frequencies (THz, ascending) at each labelled high-symmetry point of the path.

    Labels are pymatgen's, with the Brillouin-zone centre written ``Gamma``.
    """
    frequencies = {}
    for index, qpoint in enumerate(band_structure.qpoints):
        label = "Gamma" if qpoint.label in ("\\Gamma", "Γ", "GAMMA") else qpoint.label
        if label and label not in frequencies:
            frequencies[label] = sorted(band_structure.bands[:, index].tolist())
    return frequencies


def _min_frequency(
    phonon: Phonopy, qpoints: NDArray[np.float64], frequencies: NDArray[np.float64]
) -> float:
    """Lowest frequency, leaving out acoustic modes that only interpolation determines.

    Inside the first shell of q-points commensurate with the supercell (|q| below
    the reciprocal of the distance between periodic images) the acoustic branches
    come from Fourier interpolation of the long-range force constants alone; their
    small imaginary pockets are noise of the fit, not instabilities.
    """
    reciprocal = np.linalg.inv(phonon.primitive.cell).T  # phonopy: no 2 pi
    q_length = np.linalg.norm(np.asarray(qpoints) @ reciprocal.T, axis=1)
    q_cut = 1.0 / image_distance(phonon.supercell.cell) + 1e-8
    frequencies = np.sort(np.array(frequencies, dtype=float), axis=1)
    frequencies[q_length < q_cut, :3] = np.inf
    return float(frequencies.min())


def mesh_min_frequency(
    phonon: Phonopy, force_constants: NDArray[np.float64], mesh: float = 30.0
) -> float:
    """Lowest frequency on a q-mesh including Gamma (THz), see :func:`_min_frequency`."""
    phonon = _with_force_constants(phonon, force_constants)
    phonon.run_mesh(mesh, is_gamma_center=True)
    mesh_dict = phonon.get_mesh_dict()
    return _min_frequency(phonon, mesh_dict["qpoints"], mesh_dict["frequencies"])


def phonon_spectrum(
    phonon: Phonopy, force_constants: NDArray[np.float64], dos_mesh: float = 50.0
) -> PhononSpectrum:
    """Band structure, DOS, labelled frequencies and stability in one call."""
    bands = band_structure(phonon, force_constants)
    path_min = _min_frequency(phonon, [q.frac_coords for q in bands.qpoints], bands.bands.T)
    min_frequency = min(path_min, mesh_min_frequency(phonon, force_constants))
    return PhononSpectrum(
        band_structure=bands,
        dos=density_of_states(phonon, force_constants, dos_mesh),
        labelled_frequencies=labelled_frequencies(bands),
        min_frequency=min_frequency,
        has_imaginary_modes=min_frequency < IMAGINARY_TOLERANCE,
    )
