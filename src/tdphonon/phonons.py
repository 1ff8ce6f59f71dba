"""Phonon band structures, densities of states and stability from force constants.

The crystal is always in its standard primitive setting (see
:func:`tdphonon.structures.standard_primitive`), so the Setyawan-Curtarolo band path
of pymatgen applies directly; :func:`phonon_doc_force_constants` brings the force constants
of an atomate2 phonon document into that setting. Frequencies in THz.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray
from phonopy import Phonopy
from pymatgen.core import Lattice, Structure
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.dos import PhononDos
from pymatgen.symmetry.bandstructure import HighSymmKpath

from tdphonon.structures import (
    StructureError,
    image_distance,
    make_phonopy,
    standard_primitive,
    to_structure,
)

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
    structure = to_structure(phonon.primitive)
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


def frequency_shifts(
    frequencies: dict[str, list[float]], harmonic: dict[str, list[float]]
) -> tuple[dict[str, list[float]], float]:
    """Shifts of the frequencies at the labelled q-points from the harmonic ones.

    Parameters
    ----------
    frequencies : dict of str to list of float
        Frequencies (THz) per labelled q-point (:func:`labelled_frequencies`), e.g. SSCHA ones.
    harmonic : dict of str to list of float
        The harmonic frequencies (THz) at the same labels, same band order.

    Returns
    -------
    shifts : dict of str to list of float
        ``frequencies - harmonic`` (THz) for each label present in both.
    mean_shift : float
        Mean shift (THz) over the modes whose harmonic frequency is not zero within
        :data:`IMAGINARY_TOLERANCE` (the acoustic modes at Gamma are left out); 0 if none.
    """
    shifts, kept = {}, []
    for label, values in frequencies.items():
        if label not in harmonic:
            continue
        reference = np.asarray(harmonic[label])
        shift = np.asarray(values) - reference
        shifts[label] = shift.tolist()
        kept.extend(shift[np.abs(reference) > abs(IMAGINARY_TOLERANCE)].tolist())
    return shifts, float(np.mean(kept)) if kept else 0.0


# -- force constants of an atomate2 phonon document ---------------------------------------------


def match_atoms(
    ours: NDArray[np.float64],
    numbers: NDArray[np.int_],
    theirs: NDArray[np.float64],
    their_numbers: NDArray[np.int_],
    lattice: NDArray[np.float64],
    tolerance: float,
) -> NDArray[np.int_] | None:
    """Index in ``ours`` of each atom of ``theirs``, both in the same cell, up to a shift.

    The atoms of ``theirs`` are translated so that the first one sits on an atom of ``ours``
    of the same element; each candidate atom is tried until every atom finds a distinct
    partner of the same element within ``tolerance`` (periodic images included).

    Parameters
    ----------
    ours : ndarray, shape (N, 3)
        Cartesian positions, Å.
    numbers : ndarray of int, shape (N,)
        Atomic numbers of ``ours``.
    theirs : ndarray, shape (N, 3)
        Cartesian positions in the same frame, Å.
    their_numbers : ndarray of int, shape (N,)
        Atomic numbers of ``theirs``.
    lattice : ndarray, shape (3, 3)
        The common cell (rows: lattice vectors), Å.
    tolerance : float
        Largest position mismatch accepted, Å.

    Returns
    -------
    ndarray of int, shape (N,) or None
        ``match[i]`` is the atom of ``ours`` that atom ``i`` of ``theirs`` is; None if the
        two sets of atoms are not the same up to a translation.
    """
    inverse = np.linalg.inv(lattice)
    f_ours, f_theirs = ours @ inverse, theirs @ inverse
    n = len(ours)
    for k in np.flatnonzero(numbers == their_numbers[0]):
        diff = f_theirs[:, None, :] + (f_ours[k] - f_theirs[0]) - f_ours[None, :, :]
        diff -= np.round(diff)
        distance = np.linalg.norm(diff @ lattice, axis=-1)
        match = distance.argmin(axis=1)
        if (
            distance[np.arange(n), match].max() < tolerance
            and len(set(match.tolist())) == n
            and np.array_equal(numbers[match], their_numbers)
        ):
            return match
    return None


def _field(doc: Any, name: str) -> Any:
    """A field of a document given as a dict or as an object (None when absent)."""
    return doc.get(name) if isinstance(doc, dict) else getattr(doc, name, None)


def phonon_doc_force_constants(
    phonon_doc: Any, tolerance: float = 0.05
) -> tuple[Structure, NDArray[np.int_], NDArray[np.float64]]:
    """Force constants of an atomate2 ``PhononBSDOSDoc`` in tdphonon's setting.

    atomate2 stores full force constants of the phonopy supercell of
    ``(doc.structure, doc.supercell_matrix)`` (phonopy convention), in the Cartesian frame
    and atom order of that structure, which may be a conventional or rotated cell.
    tdphonon works on the standard primitive cell: this finds the supercell of the
    standard primitive that is the same crystal (lattice mapping with rotation, then atoms
    up to a translation, :func:`match_atoms`) and rotates and reorders the force constants
    onto it.

    Parameters
    ----------
    phonon_doc : PhononBSDOSDoc or dict
        Needs ``structure``, ``supercell_matrix`` and ``force_constants`` (atomate2's
        ``store_force_constants=True``, the default).
    tolerance : float
        Largest atomic position mismatch accepted, Å.

    Returns
    -------
    structure : Structure
        Standard primitive cell.
    supercell_matrix : ndarray, shape (3, 3)
        Its supercell matrix (phonopy convention, as :func:`~tdphonon.structures.make_phonopy`).
    force_constants : ndarray, shape (N, N, 3, 3)
        Full force constants of that supercell, eV/Å².

    Raises
    ------
    ValueError
        The document lacks a field, or its force constants do not fit its supercell.
    StructureError
        No supercell of the standard primitive cell is the supercell of the document.
    """
    structure = _field(phonon_doc, "structure")
    matrix = _field(phonon_doc, "supercell_matrix")
    force_constants = _field(phonon_doc, "force_constants")
    if structure is None or matrix is None or force_constants is None:
        raise ValueError(
            "the phonon document needs structure, supercell_matrix and force_constants "
            "(atomate2 PhononMaker with store_force_constants=True)"
        )
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    if not isinstance(force_constants, (list, np.ndarray)):  # atomate2 ForceConstants
        force_constants = _field(force_constants, "force_constants")
    force_constants = np.asarray(force_constants, dtype=float)
    theirs = make_phonopy(structure, matrix).supercell
    n_atoms = len(theirs)
    if force_constants.shape != (n_atoms, n_atoms, 3, 3):
        raise ValueError(
            f"force constants of shape {force_constants.shape} do not match the "
            f"{n_atoms}-atom supercell: full supercell force constants are needed"
        )
    primitive = standard_primitive(structure)
    mappings = primitive.lattice.find_all_mappings(Lattice(theirs.cell), ltol=1e-3, atol=0.5)
    # the least rotated candidate first: an unrotated cell keeps its frame and matrix
    for aligned, rotation, scale in sorted(
        mappings, key=lambda m: float(np.linalg.norm(m[1] - np.eye(3)))
    ):
        if np.linalg.det(scale) < 0:
            continue
        # rows: doc frame = our frame @ rotation; orthogonalise against round-off
        u, _, vt = np.linalg.svd(rotation)
        rotation = u @ vt
        supercell_matrix = np.round(scale).astype(int).T  # pymatgen rows -> phonopy columns
        ours = make_phonopy(primitive, supercell_matrix).supercell
        if not np.allclose(ours.cell, aligned.matrix, atol=1e-3 * np.abs(aligned.matrix).max()):
            continue
        match = match_atoms(
            ours.positions,
            ours.numbers,
            theirs.positions @ rotation.T,
            theirs.numbers,
            ours.cell,
            tolerance,
        )
        if match is None:
            continue
        result = np.empty_like(force_constants)
        result[np.ix_(match, match)] = np.einsum(
            "ab,ijbc,dc->ijad", rotation, force_constants, rotation
        )
        return primitive, supercell_matrix, result
    raise StructureError(
        "could not map the supercell of the phonon document of "
        f"{structure.composition.reduced_formula} onto a supercell of its standard primitive cell"
    )
