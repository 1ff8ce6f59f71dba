"""Phonon band structures, densities of states and stability from force constants.

The crystal is always in its standard primitive setting (see
:func:`tdphonon.structures.standard_primitive`), so the Setyawan-Curtarolo band path
of pymatgen applies directly. Frequencies in THz.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray
from phonopy import Phonopy
from pymatgen.core import Structure
from pymatgen.io.phonopy import get_pmg_structure
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.dos import PhononDos
from pymatgen.symmetry.bandstructure import HighSymmKpath

from tdphonon.structures import image_distance

#: Modes below this frequency (THz) count as imaginary (numerical noise tolerance).
IMAGINARY_TOLERANCE = -0.05

#: At most this many acoustic-pocket q-points are reported (the lowest ones).
MAX_REPORTED_POCKETS = 10

#: The rule behind ``has_imaginary_modes`` and ``min_frequency_excluding_acoustic_pockets``,
#: in words (documents, JSON summary, table legend).
ACOUSTIC_POCKET_RULE = (
    "the three acoustic branches at q-points inside the first shell of q-points commensurate "
    "with the supercell (|q| < 1 / distance between periodic images) are left out: there only "
    "Fourier interpolation determines them"
)


@dataclass
class PhononSpectrum:
    """Band structure, DOS and stability of one set of force constants.

    Attributes
    ----------
    band_structure : PhononBandStructureSymmLine
        Along the Setyawan-Curtarolo path, THz.
    dos : PhononDos
        Total DOS, THz.
    labelled_frequencies : dict of str to list of float
        Frequencies at the labelled points, THz, ascending.
    min_frequency : float
        Lowest frequency on the band path and the q-mesh, every mode included, THz.
    min_frequency_excluding_acoustic_pockets : float
        The same without the acoustic modes near Gamma (:data:`ACOUSTIC_POCKET_RULE`), THz.
    has_imaginary_modes : bool
        ``min_frequency_excluding_acoustic_pockets`` below :data:`IMAGINARY_TOLERANCE`.
    acoustic_pockets : list of dict
        The left-out acoustic modes that are imaginary: ``{"qpoint": [3 floats]
        (fractional, reciprocal lattice of the primitive cell), "frequency": THz}``, the
        lowest first, at most :data:`MAX_REPORTED_POCKETS` q-points.
    """

    band_structure: PhononBandStructureSymmLine
    dos: PhononDos
    labelled_frequencies: dict[str, list[float]]
    min_frequency: float
    has_imaginary_modes: bool
    min_frequency_excluding_acoustic_pockets: float
    acoustic_pockets: list[dict[str, Any]]


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


def high_symmetry_path(structure: Structure) -> tuple[dict[str, NDArray[np.float64]], list]:
    """Setyawan-Curtarolo path of ``structure``: q-points of the labels and the branches.

    q-points are fractional, in the reciprocal basis of ``structure`` (pymatgen's labels).
    """
    kpath = HighSymmKpath(structure, path_type="setyawan_curtarolo", symprec=1e-3)
    coords = {label: np.asarray(q, dtype=float) for label, q in kpath.kpath["kpoints"].items()}
    return coords, kpath.kpath["path"]


def _label_name(label: str) -> str:
    """A path label as the documents write it: the zone centre is ``Gamma``."""
    return "Gamma" if label in ("\\Gamma", "Γ", "GAMMA") else label


def labelled_qpoints(structure: Structure) -> dict[str, NDArray[np.float64]]:
    """q-points (fractional) of the labelled points of the band path, named and ordered as
    :func:`labelled_frequencies` names and orders them."""
    coords, path = high_symmetry_path(structure)
    return {_label_name(label): coords[label] for branch in path for label in branch}


def band_structure(
    phonon: Phonopy, force_constants: NDArray[np.float64], points_per_segment: int = 51
) -> PhononBandStructureSymmLine:
    """Band structure along the standard high-symmetry path."""
    phonon = _with_force_constants(phonon, force_constants)
    structure = get_pmg_structure(phonon.primitive)
    coords, path = high_symmetry_path(structure)
    segments, labels_dict = [], {}
    for branch in path:
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
        label = _label_name(qpoint.label) if qpoint.label else None
        if label and label not in frequencies:
            frequencies[label] = sorted(band_structure.bands[:, index].tolist())
    return frequencies


@dataclass
class _LowestFrequencies:
    """Lowest frequencies on a set of q-points (see :func:`_lowest_frequencies`), THz."""

    min_frequency: float
    excluding_pockets: float
    pockets: list[dict[str, Any]]


def _lowest_frequencies(
    phonon: Phonopy, qpoints: NDArray[np.float64], frequencies: NDArray[np.float64]
) -> _LowestFrequencies:
    """Lowest frequency with and without the acoustic modes that only interpolation determines.

    Inside the first shell of q-points commensurate with the supercell (|q| below the
    reciprocal of the distance between periodic images) the acoustic branches come from
    Fourier interpolation of the long-range force constants alone; their small imaginary
    pockets are noise of the fit, not instabilities. They are left out of
    ``excluding_pockets`` and listed, when imaginary, in ``pockets``.

    Parameters
    ----------
    phonon : Phonopy
        Gives the primitive cell and the supercell.
    qpoints : array-like, shape (n_q, 3)
        Fractional coordinates (reciprocal lattice of the primitive cell).
    frequencies : array-like, shape (n_q, n_bands)
        Frequencies at ``qpoints``, THz.
    """
    qpoints = np.asarray(qpoints, dtype=float).reshape(-1, 3)
    reciprocal = np.linalg.inv(phonon.primitive.cell).T  # phonopy: no 2 pi
    q_length = np.linalg.norm(qpoints @ reciprocal.T, axis=1)
    q_cut = 1.0 / image_distance(phonon.supercell.cell) + 1e-8
    frequencies = np.sort(np.array(frequencies, dtype=float), axis=1)
    near_gamma = q_length < q_cut
    excluded = frequencies.copy()
    excluded[near_gamma, :3] = np.inf
    acoustic = np.where(near_gamma, frequencies[:, :3].min(axis=1), np.inf)
    pockets = [
        {"qpoint": qpoints[i].tolist(), "frequency": float(acoustic[i])}
        for i in np.flatnonzero(acoustic < IMAGINARY_TOLERANCE)
    ]
    return _LowestFrequencies(float(frequencies.min()), float(excluded.min()), pockets)


def _mesh_lowest_frequencies(
    phonon: Phonopy, force_constants: NDArray[np.float64], mesh: float = 30.0
) -> _LowestFrequencies:
    """:func:`_lowest_frequencies` on a Gamma-centred q-mesh (length ``mesh``, Å)."""
    phonon = _with_force_constants(phonon, force_constants)
    phonon.run_mesh(mesh, is_gamma_center=True)
    mesh_dict = phonon.get_mesh_dict()
    return _lowest_frequencies(phonon, mesh_dict["qpoints"], mesh_dict["frequencies"])


def mesh_min_frequency(
    phonon: Phonopy, force_constants: NDArray[np.float64], mesh: float = 30.0
) -> float:
    """Lowest frequency on a q-mesh including Gamma (THz), acoustic pockets left out.

    See :data:`ACOUSTIC_POCKET_RULE`; ``mesh`` is phonopy's length of the q-mesh, Å.
    """
    return _mesh_lowest_frequencies(phonon, force_constants, mesh).excluding_pockets


def phonon_spectrum(
    phonon: Phonopy, force_constants: NDArray[np.float64], dos_mesh: float = 50.0
) -> PhononSpectrum:
    """Band structure, DOS, labelled frequencies and stability in one call.

    The NAC parameters of ``phonon`` (if set) enter every frequency. The lowest
    frequencies are over the band path and a q-mesh of length 30 Å (:class:`PhononSpectrum`).
    """
    bands = band_structure(phonon, force_constants)
    path = _lowest_frequencies(phonon, [q.frac_coords for q in bands.qpoints], bands.bands.T)
    mesh = _mesh_lowest_frequencies(phonon, force_constants)
    excluding = min(path.excluding_pockets, mesh.excluding_pockets)
    pockets: dict[tuple[float, ...], dict[str, Any]] = {}
    for pocket in sorted(path.pockets + mesh.pockets, key=lambda p: p["frequency"]):
        pockets.setdefault(tuple(np.round(pocket["qpoint"], 6)), pocket)
    return PhononSpectrum(
        band_structure=bands,
        dos=density_of_states(phonon, force_constants, dos_mesh),
        labelled_frequencies=labelled_frequencies(bands),
        min_frequency=min(path.min_frequency, mesh.min_frequency),
        has_imaginary_modes=excluding < IMAGINARY_TOLERANCE,
        min_frequency_excluding_acoustic_pockets=excluding,
        acoustic_pockets=list(pockets.values())[:MAX_REPORTED_POCKETS],
    )
