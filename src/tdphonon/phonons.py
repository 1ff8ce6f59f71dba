"""Phonon band structures, densities of states and stability from force constants.

The crystal is always in its standard primitive setting (see
:func:`tdphonon.structures.standard_primitive`), so the Setyawan-Curtarolo band path
of pymatgen applies directly; :func:`phonon_doc_force_constants` brings the force constants
of an atomate2 phonon document into that setting. Frequencies in THz.
"""

from __future__ import annotations

from copy import copy as shallow_copy
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
from numpy.typing import NDArray
from phonopy import Phonopy
from pymatgen.core import Lattice, Structure
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.dos import PhononDos

from tdphonon.structures import (
    StructureError,
    image_distance,
    make_phonopy,
    setyawan_curtarolo_kpath,
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


def _with_force_constants(
    phonon: Phonopy, force_constants: NDArray[np.float64], nac: bool = True
) -> Phonopy:
    """A copy of ``phonon`` with ``force_constants`` (and its NAC parameters if ``nac``).

    Shallow: it shares the cells and symmetry analysis of ``phonon``, which phonopy only
    reads (building them again costs more than the phonon calculations); setting force
    constants and NAC parameters gives it its own dynamical matrix and results.
    """
    copy = shallow_copy(phonon)
    copy.force_constants = None  # drops the dynamical matrix and results of ``phonon``
    copy.nac_params = phonon.nac_params if nac else None
    copy.force_constants = force_constants
    return copy


def high_symmetry_path(structure: Structure) -> tuple[dict[str, NDArray[np.float64]], list]:
    """Setyawan-Curtarolo path of ``structure``: q-points of the labels and the branches.

    q-points are fractional, in the reciprocal basis of ``structure`` (pymatgen's labels).
    """
    kpath = setyawan_curtarolo_kpath(structure)
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
    bands = phonon.band_structure
    qpoints = np.concatenate(bands.qpoints)
    frequencies = np.concatenate(bands.frequencies).T
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
    dos = phonon.total_dos
    return PhononDos(dos.frequency_points, dos.dos)


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


def _in_acoustic_pocket_region(phonon: Phonopy, qpoints: NDArray[np.float64]) -> NDArray:
    """Whether each q-point (fractional) lies where :data:`ACOUSTIC_POCKET_RULE` leaves the
    acoustic branches out: |q| below the reciprocal of the distance between periodic images."""
    reciprocal = np.linalg.inv(phonon.primitive.cell).T  # phonopy: no 2 pi
    q_length = np.linalg.norm(np.reshape(qpoints, (-1, 3)) @ reciprocal.T, axis=1)
    return q_length < 1.0 / image_distance(phonon.supercell.cell) + 1e-8


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
    frequencies = np.sort(np.array(frequencies, dtype=float), axis=1)
    near_gamma = _in_acoustic_pocket_region(phonon, qpoints)
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
    return _lowest_frequencies(phonon, phonon.mesh.qpoints, phonon.mesh.frequencies)


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


# -- renormalisation measures ------------------------------------------------------------------

#: The modes whose relative frequency shift enters the renormalisation measures, in words.
RELATIVE_SHIFT_RULE = (
    "(renormalised - harmonic) / harmonic frequency of each mode (bands in ascending order at "
    "each q-point) of a Gamma-centred q-mesh, the mean weighted by the q-point weights of the "
    "symmetry-reduced mesh; left out: the three acoustic branches at the q-points inside the "
    "first shell of q-points commensurate with the supercell (|q| < 1 / distance between "
    "periodic images: they go to zero there) and every mode whose harmonic frequency is below "
    f"{abs(IMAGINARY_TOLERANCE)} THz (imaginary or zero: no relative shift)"
)

#: The modes that count as stabilised, in words.
STABILISED_RULE = (
    f"imaginary in the harmonic phonons (below {IMAGINARY_TOLERANCE} THz) and real in the "
    "renormalised ones, band by band in ascending order at each q-point of the symmetry-reduced "
    "q-mesh and the labelled points of the band path; as in the stability test, "
    + ACOUSTIC_POCKET_RULE
)


@dataclass
class RenormalisationMeasures:
    """How much the renormalised phonons differ from the harmonic ones (one temperature).

    Attributes
    ----------
    renormalisation_mesh : list of int
        The Gamma-centred q-mesh of the relative shifts.
    mean_relative_shift : float or None
        Weighted mean of (renormalised - harmonic) / harmonic over the modes of the mesh that
        :data:`RELATIVE_SHIFT_RULE` keeps (dimensionless, 0.1 = 10 % stiffer); None if none.
    mean_absolute_relative_shift : float or None
        The same mean of the absolute relative shifts.
    max_relative_shift : float or None
        The relative shift of largest magnitude (signed) among those modes.
    max_relative_shift_qpoint : list of float or None
        Its q-point (fractional, reciprocal lattice of the primitive cell).
    harmonic_lowest_optical_frequency, lowest_optical_frequency : float or None
        The lowest optical frequency at Gamma (fourth band in ascending order, no LO-TO
        splitting: q = 0 exactly), harmonic and renormalised, THz; None for one atom per cell.
    lowest_optical_shift : float or None
        Their difference, renormalised - harmonic, THz.
    lowest_optical_relative_shift : float or None
        That shift over the harmonic frequency (None where it is below the tolerance).
    stabilised_modes : list of dict
        Modes imaginary in the harmonic phonons and real in the renormalised ones
        (:data:`STABILISED_RULE`): ``{"qpoint": [3 floats], "harmonic_frequencies": [THz],
        "frequencies": [THz]}`` per q-point, the most imaginary first, at most
        :data:`MAX_REPORTED_POCKETS` q-points.
    stabilised_mode_fraction : float
        Fraction of all modes of the mesh (q-point weights) that are stabilised.
    harmonic_free_energy : float or None
        Static energy plus the harmonic phonon free energy at the same temperature with the
        harmonic force constants (:func:`harmonic_free_energy`), eV/atom; None when the
        harmonic phonons are unstable.
    anharmonic_free_energy : float or None
        SSCHA free energy minus ``harmonic_free_energy``, eV/atom.
    anharmonic_free_energy_error : float or None
        Its standard error: that of the SSCHA free energy (the harmonic one is exact), eV/atom.
    anharmonic_free_energy_note : str
        ``"ok"`` or why it is undefined.
    """

    renormalisation_mesh: list[int]
    mean_relative_shift: float | None
    mean_absolute_relative_shift: float | None
    max_relative_shift: float | None
    max_relative_shift_qpoint: list[float] | None
    harmonic_lowest_optical_frequency: float | None
    lowest_optical_frequency: float | None
    lowest_optical_shift: float | None
    lowest_optical_relative_shift: float | None
    stabilised_modes: list[dict[str, Any]]
    stabilised_mode_fraction: float
    harmonic_free_energy: float | None
    anharmonic_free_energy: float | None
    anharmonic_free_energy_error: float | None
    anharmonic_free_energy_note: str


def harmonic_free_energy(
    phonon: Phonopy,
    force_constants: NDArray[np.float64],
    temperature: float,
    statistics: str = "quantum",
    mesh: float = 50.0,
) -> float:
    """Harmonic phonon free energy of ``force_constants`` at ``temperature``, eV/atom.

    phonopy's thermal properties on its length-based q-mesh ``mesh`` (Å), the acoustic modes
    at Gamma excluded, no NAC: the harmonic part of the SSCHA free energy
    (:meth:`tdphonon.sscha.SSCHA.free_energy`) computed the same way. The static energy is
    not included. ``statistics``: ``"quantum"`` or ``"classical"``.
    """
    from phonopy.physical_units import get_physical_units

    copy = _with_force_constants(phonon, force_constants, nac=False)
    copy.run_mesh(mesh)
    copy.run_thermal_properties(
        temperatures=[temperature],
        classical=statistics == "classical",
        exclude_gamma_acoustic=True,
    )
    free_energy = float(copy.thermal_properties.free_energy[0])  # kJ/mol per primitive cell
    return free_energy / get_physical_units().EvTokJmol / len(copy.primitive)


def _qpoint_frequencies(
    phonon: Phonopy, force_constants: NDArray[np.float64], qpoints: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Frequencies (THz, ascending at each q-point) of ``force_constants`` at ``qpoints``."""
    phonon = _with_force_constants(phonon, force_constants)
    phonon.run_qpoints(qpoints)
    return np.sort(np.asarray(phonon.qpoints.frequencies, dtype=float), axis=1)


def renormalisation_measures(
    phonon: Phonopy,
    harmonic_force_constants: NDArray[np.float64],
    force_constants: NDArray[np.float64],
    temperature: float,
    statistics: str = "quantum",
    free_energy: float | None = None,
    free_energy_error: float | None = None,
    static_energy: float = 0.0,
    harmonic_unstable: bool | None = None,
    mesh: float = 30.0,
    free_energy_mesh: float = 50.0,
) -> RenormalisationMeasures:
    """Relative frequency shifts, stabilised modes and anharmonic free energy at one T.

    Parameters
    ----------
    phonon : Phonopy
        Primitive cell and supercell of both sets of force constants; its NAC parameters,
        if any, enter the frequencies (not the free energy).
    harmonic_force_constants : ndarray, shape (N, N, 3, 3)
        Harmonic (0 K) supercell force constants, eV/Å².
    force_constants : ndarray, shape (N, N, 3, 3)
        Renormalised (SSCHA) force constants at ``temperature``, eV/Å².
    temperature : float
        Temperature, K.
    statistics : {"quantum", "classical"}
        Statistics of the harmonic free energy (that of the SSCHA).
    free_energy, free_energy_error : float, optional
        SSCHA free energy and its standard error, eV/atom (static energy included).
    static_energy : float
        Energy of the undisplaced crystal, eV/atom: the SSCHA free energy's zero.
    harmonic_unstable : bool, optional
        Whether the harmonic phonons have imaginary modes (the harmonic document's
        ``has_imaginary_modes``); default: tested on the q-points evaluated here.
    mesh : float
        phonopy's length (Å) of the Gamma-centred q-mesh of the shifts and stabilised modes.
    free_energy_mesh : float
        Its length for the harmonic free energy (the SSCHA's ``free_energy_mesh``).

    Returns
    -------
    RenormalisationMeasures
        See :data:`RELATIVE_SHIFT_RULE` and :data:`STABILISED_RULE` for the modes counted.
    """
    grid = _with_force_constants(phonon, harmonic_force_constants)
    grid.run_mesh(mesh, is_gamma_center=True)
    mesh_qpoints = np.asarray(grid.mesh.qpoints, dtype=float).reshape(-1, 3)
    weights = np.asarray(grid.mesh.weights, dtype=float)
    n_mesh = len(mesh_qpoints)
    extra = [np.zeros(3), *labelled_qpoints(to_structure(phonon.primitive)).values()]
    qpoints = np.concatenate([mesh_qpoints, np.asarray(extra, dtype=float)])
    harmonic = _qpoint_frequencies(phonon, harmonic_force_constants, qpoints)
    renormalised = _qpoint_frequencies(phonon, force_constants, qpoints)
    excluded = np.zeros(harmonic.shape, dtype=bool)
    excluded[_in_acoustic_pocket_region(phonon, qpoints), :3] = True

    # relative shifts over the mesh
    on_mesh, renormalised_on_mesh = harmonic[:n_mesh], renormalised[:n_mesh]
    keep = ~excluded[:n_mesh] & (on_mesh > abs(IMAGINARY_TOLERANCE))
    relative = np.full(on_mesh.shape, np.nan)
    relative[keep] = (renormalised_on_mesh[keep] - on_mesh[keep]) / on_mesh[keep]
    mean = mean_abs = largest = largest_q = None
    if keep.any():
        mode_weights = np.broadcast_to(weights[:, None], keep.shape)[keep]
        mean = float(np.sum(mode_weights * relative[keep]) / mode_weights.sum())
        mean_abs = float(np.sum(mode_weights * np.abs(relative[keep])) / mode_weights.sum())
        q_index, band = np.unravel_index(np.nanargmax(np.abs(relative)), relative.shape)
        largest = float(relative[q_index, band])
        largest_q = mesh_qpoints[q_index].tolist()

    # lowest optical modes at Gamma (row n_mesh)
    optical = dict.fromkeys(("harmonic", "renormalised", "shift", "relative"))
    if harmonic.shape[1] > 3:
        h, r = float(harmonic[n_mesh, 3]), float(renormalised[n_mesh, 3])
        optical.update(harmonic=h, renormalised=r, shift=r - h)
        if h > abs(IMAGINARY_TOLERANCE):
            optical["relative"] = (r - h) / h

    # stabilised modes: mesh and labelled points, each q-point once
    stabilised = (
        ~excluded & (harmonic < IMAGINARY_TOLERANCE) & (renormalised >= IMAGINARY_TOLERANCE)
    )
    seen: set[tuple[float, ...]] = set()
    modes = []
    for index in np.flatnonzero(stabilised.any(axis=1)):
        key = tuple(np.round(np.mod(qpoints[index], 1.0), 6) % 1.0)
        if key in seen:
            continue
        seen.add(key)
        bands = stabilised[index]
        modes.append(
            {
                "qpoint": qpoints[index].tolist(),
                "harmonic_frequencies": harmonic[index, bands].tolist(),
                "frequencies": renormalised[index, bands].tolist(),
            }
        )
    modes.sort(key=lambda mode: min(mode["harmonic_frequencies"]))
    counts = stabilised[:n_mesh].sum(axis=1)
    fraction = float(np.sum(weights * counts) / (weights.sum() * harmonic.shape[1]))

    # anharmonic free energy
    if harmonic_unstable is None:
        harmonic_unstable = bool(np.any(~excluded & (harmonic < IMAGINARY_TOLERANCE)))
    reference = anharmonic = error = None
    if harmonic_unstable:
        note = "undefined: the harmonic phonons are unstable (imaginary modes)"
    else:
        reference = static_energy + harmonic_free_energy(
            phonon, harmonic_force_constants, temperature, statistics, free_energy_mesh
        )
        if free_energy is None:
            note = "undefined: no SSCHA free energy"
        else:
            anharmonic, error, note = free_energy - reference, free_energy_error, "ok"
    return RenormalisationMeasures(
        renormalisation_mesh=[int(n) for n in grid.mesh_numbers],
        mean_relative_shift=mean,
        mean_absolute_relative_shift=mean_abs,
        max_relative_shift=largest,
        max_relative_shift_qpoint=largest_q,
        harmonic_lowest_optical_frequency=optical["harmonic"],
        lowest_optical_frequency=optical["renormalised"],
        lowest_optical_shift=optical["shift"],
        lowest_optical_relative_shift=optical["relative"],
        stabilised_modes=modes[:MAX_REPORTED_POCKETS],
        stabilised_mode_fraction=fraction,
        harmonic_free_energy=reference,
        anharmonic_free_energy=anharmonic,
        anharmonic_free_energy_error=error,
        anharmonic_free_energy_note=note,
    )


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
