"""Reading and checking input crystals; choosing supercells; converting cells.

This module is the one home of every cell conversion and supercell rule:

* pymatgen ``Structure`` <-> ASE ``Atoms`` <-> phonopy ``PhonopyAtoms``
  (:func:`to_ase_atoms`, :func:`to_phonopy_atoms`, :func:`to_structure`), through the
  libraries' own converters where they exist (:class:`pymatgen.io.ase.AseAtomsAdaptor`,
  :func:`pymatgen.io.phonopy.get_phonopy_structure` / ``get_pmg_structure``);
* supercells of a :class:`~phonopy.Phonopy` object as ASE ``Atoms``, undisplaced or
  displaced (:func:`supercell_atoms`, :func:`displaced_atoms`), and the shortest periodic
  images of displacements (:func:`minimum_image_vectors`);
* supercell matrices (:func:`supercell_matrix_array`, :func:`choose_supercell_matrix`,
  :func:`primitive_supercell_matrix`) and Phonopy objects (:func:`make_phonopy`).

Every check raises :class:`StructureError` with a one-line message naming the
problem, so command-line users never see a traceback from deep inside a library.
Units: Å.
"""

from __future__ import annotations

import itertools
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from numpy.typing import NDArray
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms
from pymatgen.core import IStructure, Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.phonopy import get_phonopy_structure, get_pmg_structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from pymatgen.symmetry.bandstructure import HighSymmKpath

logger = logging.getLogger(__name__)


class StructureError(ValueError):
    """The input structure cannot be used (unreadable, non-periodic, disordered...)."""


def read_structure(path: str | os.PathLike) -> Structure:
    """Read a periodic crystal from CIF, POSCAR, pymatgen JSON or any format ASE reads."""
    path = Path(path)
    if not path.is_file():
        raise StructureError(f"structure file not found: {path}")
    try:
        return Structure.from_file(path)
    except Exception as pmg_error:
        try:
            from ase.io import read

            atoms = read(path)
        except Exception:
            raise StructureError(f"cannot read a structure from {path}: {pmg_error}") from None
        if not all(atoms.pbc) or atoms.cell.rank < 3:
            raise StructureError(
                f"{path} holds a non-periodic structure (a crystal with a 3D cell is needed)"
            ) from None
        return to_structure(atoms)


def check_structure(structure: Structure) -> None:
    """Raise :class:`StructureError` unless ``structure`` is an ordered 3D crystal."""
    if not isinstance(structure, Structure):
        raise StructureError(
            f"expected a periodic pymatgen Structure, got {type(structure).__name__}"
        )
    if not structure.is_ordered:
        raise StructureError(
            f"{structure.composition.reduced_formula} is disordered (partial occupancies); "
            "phonons need an ordered structure: order it first (e.g. an SQS or pymatgen's "
            "OrderDisorderedStructureTransformation)"
        )
    if abs(structure.volume) < 1e-3 or not np.isfinite(structure.lattice.matrix).all():
        raise StructureError(f"{structure.composition.reduced_formula} has a degenerate lattice")
    if len(structure) > 1:
        distances = structure.distance_matrix[np.triu_indices(len(structure), 1)]
        if distances.min() < 0.5:
            raise StructureError(
                f"{structure.composition.reduced_formula} has atoms closer than 0.5 Å "
                f"({distances.min():.3f} Å)"
            )


def standard_primitive(structure: Structure, symprec: float = 1e-3) -> Structure:
    """The standard primitive cell (Setyawan-Curtarolo), whose band path is well defined."""
    check_structure(structure)
    return SpacegroupAnalyzer(structure, symprec=symprec).get_primitive_standard_structure()


@dataclass(frozen=True)
class PrimitiveMapping:
    """How a crystal maps onto its standard primitive cell (:func:`map_to_standard_primitive`).

    Attributes
    ----------
    primitive : Structure
        The standard primitive cell (:func:`standard_primitive`).
    rotation : ndarray, shape (3, 3)
        Cartesian rotation (possibly improper) from the frame of the structure to that of
        ``primitive``: a vector ``v`` of the structure is ``rotation @ v`` there.
    transformation : ndarray of int, shape (3, 3)
        The lattice vectors of the structure (rows, rotated) are
        ``transformation @ primitive.lattice.matrix``; its determinant is the number of
        primitive cells in the cell of the structure.
    atoms : ndarray of int, shape (n_sites,)
        Index in ``primitive`` of each site of the structure.
    """

    primitive: Structure
    rotation: NDArray[np.float64]
    transformation: NDArray[np.int_]
    atoms: NDArray[np.int_]


def map_to_standard_primitive(
    structure: Structure, symprec: float = 1e-3, tolerance: float = 0.05
) -> PrimitiveMapping:
    """Map a crystal in any cell and orientation onto its standard primitive cell.

    pymatgen's lattice mappings (:meth:`~pymatgen.core.Lattice.find_all_mappings`) give
    the candidate rotations and integer transformations, the least rotated first; the
    first one that also maps every atom onto an atom of the same element of the
    primitive cell (up to a common translation) is returned.

    Parameters
    ----------
    structure : Structure
        The crystal as given (conventional, primitive, rotated, a supercell...).
    symprec : float
        Symmetry tolerance of the standardisation, Å.
    tolerance : float
        Largest atomic position mismatch accepted, Å.

    Raises
    ------
    StructureError
        No mapping found (should not happen for an ordered crystal).
    """
    primitive = standard_primitive(structure, symprec)
    prim_matrix = primitive.lattice.matrix
    prim_frac = primitive.frac_coords
    prim_numbers = np.array([specie.Z for specie in primitive.species])
    numbers = np.array([specie.Z for specie in structure.species])
    mappings = primitive.lattice.find_all_mappings(structure.lattice, ltol=1e-2, atol=1.0)
    for _, rotation, transformation in sorted(
        mappings, key=lambda m: float(np.linalg.norm(m[1] - np.eye(3)))
    ):
        if np.linalg.det(transformation) < 0:
            continue
        # fractional coordinates in the primitive basis: exact through the integer matrix
        frac = structure.frac_coords @ transformation
        for k in np.flatnonzero(prim_numbers == numbers[0]):
            diff = frac[:, None, :] + (prim_frac[k] - frac[0]) - prim_frac[None, :, :]
            diff -= np.round(diff)
            distance = np.linalg.norm(diff @ prim_matrix, axis=-1)
            distance[numbers[:, None] != prim_numbers[None, :]] = np.inf
            atoms = distance.argmin(axis=1)
            if distance[np.arange(len(structure)), atoms].max() < tolerance and len(
                set(atoms.tolist())
            ) == len(primitive):
                u, _, vt = np.linalg.svd(rotation)  # orthogonalise against round-off
                return PrimitiveMapping(primitive, u @ vt, transformation, atoms)
    raise StructureError(
        f"could not map {structure.composition.reduced_formula} onto its standard primitive cell"
    )


def supercell_matrix_array(
    supercell_matrix: Any, name: str = "supercell matrix (--supercell)"
) -> NDArray[np.int_]:
    """A supercell matrix (3 integers for a diagonal one, or 3x3) as a 3x3 integer array.

    Parameters
    ----------
    supercell_matrix : array-like of int, shape (3,) or (3, 3)
        Supercell matrix, phonopy convention (columns: supercell vectors in units of the
        unit-cell vectors); 3 integers for a diagonal one.
    name : str
        What the matrix is, for the error messages.

    Returns
    -------
    ndarray of int, shape (3, 3)

    Raises
    ------
    StructureError
        Not 3 or 3x3 numbers, not integers, or a determinant below 1 (singular or
        left-handed).
    """
    try:
        matrix = np.asarray(supercell_matrix, dtype=float)
    except (TypeError, ValueError):
        raise StructureError(f"{name} must be 3 or 3x3 integers, got {supercell_matrix}") from None
    if matrix.shape == (3,):
        matrix = np.diag(matrix)
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
        raise StructureError(f"{name} must be 3 or 3x3 integers, got {matrix.tolist()}")
    if np.abs(matrix - np.round(matrix)).max() > 1e-6:
        raise StructureError(f"{name} must be integers, got {matrix.tolist()}")
    matrix = np.round(matrix).astype(int)
    if round(np.linalg.det(matrix)) < 1:
        raise StructureError(
            f"{name} {matrix.tolist()} has determinant "
            f"{round(np.linalg.det(matrix))}: a positive one (a right-handed supercell) is needed"
        )
    return matrix


def primitive_supercell_matrix(
    structure: Structure, supercell_matrix: Any, symprec: float = 1e-3
) -> NDArray[np.int_]:
    """The supercell matrix of the standard primitive cell equal to one of ``structure``.

    As phonopy's ``--dim``, ``supercell_matrix`` applies to the cell given: its columns are
    the supercell vectors in units of the lattice vectors of ``structure`` (3 integers for
    a diagonal matrix). tdphonon computes on the standard primitive cell; the returned
    matrix makes the same supercell from it (e.g. 3 3 3 of a 4-atom conventional fcc cell:
    108 atoms, ``[[-3, 3, 3], [3, -3, 3], [3, 3, -3]]`` of the primitive cell).

    Parameters
    ----------
    structure : Structure
        The crystal as given.
    supercell_matrix : array-like of int, shape (3,) or (3, 3)
        Supercell of ``structure``, phonopy convention.
    symprec : float
        Symmetry tolerance of the standardisation, Å.

    Returns
    -------
    ndarray of int, shape (3, 3)
        Supercell matrix of :func:`standard_primitive` ``(structure)``, phonopy convention,
        as :func:`make_phonopy` takes it.

    Raises
    ------
    StructureError
        An invalid matrix (:func:`supercell_matrix_array`), or one that is not integer in
        the primitive basis (cannot happen for a cell of the crystal's own lattice).
    """
    matrix = supercell_matrix_array(supercell_matrix)
    mapping = map_to_standard_primitive(structure, symprec)
    # supercell rows S^T L = S^T T L_prim (rotated), so S_prim = T^T S
    primitive_matrix = mapping.transformation.T @ matrix
    if np.abs(primitive_matrix - np.round(primitive_matrix)).max() > 1e-6:
        raise StructureError(
            f"--supercell {matrix.tolist()} of the given cell is not a supercell of the "
            f"primitive cell of {structure.composition.reduced_formula}"
        )
    return np.round(primitive_matrix).astype(int)


def image_distance(lattice_matrix: NDArray[np.float64]) -> float:
    """Shortest non-zero lattice vector (distance between periodic images), Å."""
    reduced = Lattice(lattice_matrix).get_lll_reduced_lattice().matrix
    shifts = np.array(np.meshgrid(*[[-1, 0, 1]] * 3)).T.reshape(-1, 3)
    shifts = shifts[np.any(shifts != 0, axis=1)]
    return float(np.linalg.norm(shifts @ reduced, axis=1).min())


#: Target shapes of candidate supercells: simple, face- and body-centred cubic.
_SHAPES = (
    np.eye(3),
    np.array([[0.0, 1, 1], [1, 0, 1], [1, 1, 0]]) / 2 ** (1 / 3),
    np.array([[-1.0, 1, 1], [1, -1, 1], [1, 1, -1]]) / 4 ** (1 / 3),
)


def setyawan_curtarolo_kpath(structure: Structure) -> HighSymmKpath:
    """pymatgen's Setyawan-Curtarolo k-path of ``structure`` (symprec 1e-3 Å).

    pymatgen warns, at every call, when its own standardisation of the cell differs from the
    cell given (common for monoclinic and triclinic cells); the path is still the one of
    the cell given, and in a campaign of thousands the warning drowns the log, so it is
    logged at debug level instead.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        kpath = HighSymmKpath(structure, path_type="setyawan_curtarolo", symprec=1e-3)
    for warning in caught:
        logger.debug("k-path of %s: %s", structure.composition.reduced_formula, warning.message)
    return kpath


def zone_boundary_qpoints(structure: Structure) -> NDArray[np.float64]:
    """Labelled high-symmetry q-points with coordinates in multiples of 1/2.

    These (Gamma, X, M, R, L, ...) are where soft modes of high-symmetry phases sit;
    a supercell commensurate with them samples those modes directly. Fractional
    coordinates of the reciprocal lattice of ``structure`` (a standard primitive cell).
    """
    kpath = setyawan_curtarolo_kpath(structure)
    points = np.array(list(kpath.kpath["kpoints"].values()), dtype=float)
    halves = np.all(np.abs(2 * points - np.rint(2 * points)) < 1e-6, axis=1)
    return points[halves]


def lattice_rotations(structure: Structure, symprec: float = 1e-3) -> NDArray[np.int_]:
    """The rotations of the crystal's space group in its lattice basis (spglib's), ``(n, 3, 3)``.

    They act on fractional coordinates: ``x -> R x + t``.
    """
    return _rotations(SpacegroupAnalyzer(structure, symprec=symprec))


def _rotations(analyzer: SpacegroupAnalyzer) -> NDArray[np.int_]:
    rotations = analyzer.get_symmetry_dataset().rotations
    return np.unique(np.asarray(rotations, dtype=int), axis=0)


def _keep_point_group(matrices: NDArray[np.int_], rotations: NDArray[np.int_]) -> NDArray[np.bool_]:
    """:func:`keeps_point_group` of each of ``matrices`` ``(k, 3, 3)``, ``(k,)``."""
    columns = np.asarray(matrices, dtype=float).transpose(0, 2, 1)
    conjugated = np.linalg.inv(columns)[:, None] @ rotations[None] @ columns[:, None]
    return np.all(np.abs(conjugated - np.rint(conjugated)) < 1e-6, axis=(1, 2, 3))


def keeps_point_group(matrix: NDArray[np.int_], rotations: NDArray[np.int_]) -> bool:
    """Whether the supercell lattice is mapped onto itself by every rotation.

    ``matrix`` has the supercell vectors as rows, in units of the lattice vectors (the
    transpose of phonopy's convention). The supercell translations are ``matrix.T @ n``
    (fractional, integer ``n``); ``R`` maps them onto themselves when
    ``inv(matrix.T) @ R @ matrix.T`` is integer. A supercell that does not keeps fewer
    symmetries than the crystal: the fitted force constants and the phonons lose the
    degeneracies the lost operations impose (phonopy warns that the point groups of
    supercell and primitive cell differ).
    """
    return bool(_keep_point_group(np.asarray(matrix)[None], rotations)[0])


def _hermite_normal_forms(n_cells: int) -> NDArray[np.int_]:
    """Every sublattice of index ``n_cells`` once: lower-triangular Hermite normal forms
    (rows generate it; ``0 <= H[i, j] < H[j, j]`` below the diagonal), ``(k, 3, 3)``."""
    forms = []
    for a in range(1, n_cells + 1):
        if n_cells % a:
            continue
        for c in range(1, n_cells // a + 1):
            if (n_cells // a) % c:
                continue
            b, d, e = (x.ravel() for x in np.meshgrid(range(a), range(a), range(c)))
            block = np.zeros((len(b), 3, 3), dtype=int)
            block[:, 0, 0], block[:, 1, 1], block[:, 2, 2] = a, c, n_cells // (a * c)
            block[:, 1, 0], block[:, 2, 0], block[:, 2, 1] = b, d, e
            forms.append(block)
    return np.concatenate(forms)


def _symmetric_commensurate(
    n_cells: int, rotations: NDArray[np.int_], qpoints: NDArray[np.float64]
) -> NDArray[np.int_]:
    """The supercell matrices (rows) of ``n_cells`` cells commensurate with ``qpoints`` that
    keep the point group (:func:`keeps_point_group`), ``(k, 3, 3)``."""
    forms = _hermite_normal_forms(n_cells)
    products = np.einsum("qj,kij->kqi", qpoints, forms)
    forms = forms[np.all(np.abs(products - np.rint(products)) < 1e-6, axis=(1, 2))]
    return forms[_keep_point_group(forms, rotations)] if len(forms) else forms


def _conventional_transformation(
    analyzer: SpacegroupAnalyzer, lattice: NDArray[np.float64]
) -> NDArray[np.int_]:
    """Rows of the standard conventional cell in units of ``lattice``, the lattice vectors
    of the analysed cell (a standard primitive cell); the identity if not an integer matrix."""
    conventional = analyzer.get_conventional_standard_structure().lattice.matrix
    transformation = conventional @ np.linalg.inv(lattice)
    if np.abs(transformation - np.rint(transformation)).max() > 1e-3:
        return np.eye(3, dtype=int)
    transformation = np.rint(transformation).astype(int)
    return transformation if round(np.linalg.det(transformation)) > 0 else -transformation


def _candidates(
    structure: Structure, min_length: float, max_cells: int, analyzer: SpacegroupAnalyzer
):
    """Integer matrices (rows multiply the lattice of ``structure``): diagonal multiples of
    the cell and of its conventional cell up to images ``min_length`` apart in every
    direction (and one more), and the matrices closest to cubic shapes of each size."""
    lattice, volume = structure.lattice.matrix, structure.volume
    for base in (np.eye(3, dtype=int), _conventional_transformation(analyzer, lattice)):
        vectors = base @ lattice
        widths = abs(np.linalg.det(vectors)) / np.linalg.norm(
            np.cross(np.roll(vectors, -1, 0), np.roll(vectors, -2, 0)), axis=1
        )
        bounds = np.ceil(min_length / widths - 1e-8).astype(int) + 1
        for multiples in itertools.product(*(range(1, b + 1) for b in bounds)):
            yield np.diag(multiples) @ base
    inverse = np.linalg.inv(lattice)
    for n_cells in range(1, max_cells + 1):
        for shape in _SHAPES:
            matrix = np.rint((n_cells * volume) ** (1 / 3) * shape @ inverse).astype(int)
            for candidate in (matrix, 2 * matrix):
                determinant = round(np.linalg.det(candidate))
                if 0 < abs(determinant) <= max_cells:
                    yield candidate if determinant > 0 else -candidate


def choose_supercell_matrix(
    structure: Structure,
    min_length: float = 10.0,
    max_atoms: int = 600,
    qpoints: NDArray[np.float64] | None = None,
    symprec: float = 1e-3,
) -> NDArray[np.int_]:
    """The smallest supercell with images ``min_length`` Å apart that keeps the symmetry.

    Candidates are diagonal multiples of the cell and of its standard conventional cell,
    and the integer matrices closest to simple-, face- and body-centred cubic shapes of
    each size (Hart-Forcade style rounding of :math:`s T L^{-1}`), the same doubled. Among
    those whose periodic images are at least ``min_length`` apart, the smallest one that
    is commensurate with ``qpoints`` and keeps the crystal's point group
    (:func:`keeps_point_group`) is chosen; failing that, the smallest commensurate one,
    then the smallest that keeps the point group, then the smallest.

    Parameters
    ----------
    structure : Structure
        The unit cell of the phonopy calculation.
    min_length : float
        Minimum distance between periodic images of an atom, Å.
    max_atoms : int
        Largest acceptable supercell.
    qpoints : ndarray, shape (n, 3), optional
        q-points (fractional) the supercell should contain; by default the
        zone-boundary high-symmetry points (:func:`zone_boundary_qpoints`).
    symprec : float
        Symmetry tolerance, Å.

    Returns
    -------
    ndarray, shape (3, 3)
        Supercell matrix in phonopy's convention (its columns give the supercell
        vectors in units of the unit-cell vectors), as :func:`make_phonopy` takes it.
    """
    lattice = structure.lattice.matrix
    if qpoints is None:
        qpoints = zone_boundary_qpoints(structure)
    qpoints = np.asarray(qpoints, dtype=float).reshape(-1, 3)
    analyzer = SpacegroupAnalyzer(structure, symprec=symprec)
    rotations = _rotations(analyzer)
    max_cells = max_atoms // len(structure)

    best: dict[tuple[bool, bool], tuple[int, NDArray[np.int_]]] = {}
    for matrix in _candidates(structure, min_length, max_cells, analyzer):
        size = round(np.linalg.det(matrix))
        if not 0 < size <= max_cells:
            continue
        products = qpoints @ matrix.T
        commensurate = bool(np.all(np.abs(products - np.rint(products)) < 1e-6))
        kind = (commensurate, keeps_point_group(matrix, rotations))
        if kind in best and size >= best[kind][0]:
            continue
        if image_distance(matrix @ lattice) >= min_length - 1e-6:
            best[kind] = (size, matrix)
    if (True, True) in best and best.get((True, False), best[True, True])[0] < best[True, True][0]:
        # keeping the symmetry costs size: search every sublattice between the smallest
        # possible (a lattice whose shortest vector is L has a volume >= L^3 / sqrt(2))
        # and the one found
        smallest = max(1, int(np.ceil(min_length**3 / np.sqrt(2) / structure.volume - 1e-8)))
        for n_cells in range(smallest, best[True, True][0]):
            found = [
                matrix
                for matrix in _symmetric_commensurate(n_cells, rotations, qpoints)
                if image_distance(matrix @ lattice) >= min_length - 1e-6
            ]
            if found:
                best[True, True] = (n_cells, found[0])
                break
    for kind in ((True, True), (True, False), (False, True), (False, False)):
        if kind in best:
            return best[kind][1].T  # rows multiply the lattice above; phonopy wants columns
    raise StructureError(
        f"a supercell of {structure.composition.reduced_formula} with periodic images "
        f"{min_length} Å apart needs more than {max_atoms} atoms"
    )


#: Periodic images closer than this (Å) leave too few commensurate q-points for a
#: meaningful renormalisation (a 1x1x1 cell samples the zone centre only).
MIN_IMAGE_DISTANCE = 5.0


def check_supercell(structure: Structure, supercell_matrix: NDArray[np.int_] | list) -> None:
    """Raise :class:`StructureError` if the supercell is too small for phonons.

    The periodic images must be at least :data:`MIN_IMAGE_DISTANCE` and twice the
    nearest-neighbour distance apart, so that the first neighbour shell is resolved.
    """
    phonon = make_phonopy(structure, supercell_matrix)
    distance = minimum_image_distance(phonon)
    neighbours = structure.get_neighbor_list(4.0)[3]
    nearest = float(neighbours.min()) if len(neighbours) else 0.0
    needed = max(MIN_IMAGE_DISTANCE, 2 * nearest)
    if distance < needed - 1e-6:
        raise StructureError(
            f"supercell too small: periodic images are {distance:.2f} Å apart, at least "
            f"{needed:.2f} Å are needed; use a larger --supercell or --min-length"
        )


def minimum_image_distance(phonon: Phonopy) -> float:
    """Distance between periodic images in the supercell of ``phonon``, Å."""
    return image_distance(phonon.supercell.cell)


def make_phonopy(
    structure: Structure,
    supercell_matrix: NDArray[np.int_] | list,
    symprec: float = 1e-5,
    nac_params: Mapping[str, Any] | None = None,
) -> Phonopy:
    """Phonopy object with ``structure`` as unit and primitive cell.

    Parameters
    ----------
    structure : Structure
        Unit (= primitive) cell.
    supercell_matrix : array-like of int, shape (3,) or (3, 3)
        Supercell of ``structure``, phonopy convention (3 integers for a diagonal one).
    symprec : float
        phonopy's symmetry tolerance, Å.
    nac_params : mapping, optional
        Non-analytical term correction (LO-TO splitting): ``born`` (Born effective
        charges per atom of ``structure``, shape (n, 3, 3), e), ``dielectric`` (high-frequency
        dielectric tensor, 3x3) and optionally ``factor`` (phonopy's unit conversion, default
        that of eV and Å), as :func:`read_born` returns them. Enters band structures, DOS and
        q-point frequencies, not the force constants.
    """
    matrix = supercell_matrix_array(supercell_matrix)
    phonon = Phonopy(
        to_phonopy_atoms(structure),
        supercell_matrix=matrix,
        primitive_matrix=np.eye(3),
        symprec=symprec,
    )
    if nac_params is not None:
        phonon.nac_params = _phonopy_nac_params(nac_params, len(structure))
    return phonon


# -- cell conversions ----------------------------------------------------------------------------


def to_ase_atoms(cell: Structure | Atoms | PhonopyAtoms) -> Atoms:
    """A new periodic ASE ``Atoms`` of a cell: symbols, lattice and Cartesian positions (Å).

    Only those are kept (no masses, tags, magnetic moments or calculator): the atoms a
    force calculator sees.

    Parameters
    ----------
    cell : Structure, Atoms or PhonopyAtoms
        A pymatgen structure (through :class:`~pymatgen.io.ase.AseAtomsAdaptor`), ASE atoms
        (copied) or a phonopy cell (a unit cell, supercell or primitive cell of phonopy).

    Raises
    ------
    StructureError
        Any other type.
    """
    if isinstance(cell, Atoms):
        return cell.copy()
    if isinstance(cell, IStructure):
        atoms = AseAtomsAdaptor.get_atoms(cell)
        return Atoms(
            atoms.get_chemical_symbols(), cell=atoms.cell, positions=atoms.positions, pbc=True
        )
    if isinstance(cell, PhonopyAtoms):
        return Atoms(
            symbols=list(cell.symbols), cell=np.array(cell.cell), positions=cell.positions, pbc=True
        )
    raise StructureError(
        f"expected a pymatgen Structure, ASE Atoms or PhonopyAtoms, got {type(cell).__name__}"
    )


def to_phonopy_atoms(cell: Structure | Atoms | PhonopyAtoms) -> PhonopyAtoms:
    """A new ``PhonopyAtoms`` of a cell (lattice and positions in Å).

    Parameters
    ----------
    cell : Structure, Atoms or PhonopyAtoms
        A pymatgen structure (through :func:`pymatgen.io.phonopy.get_phonopy_structure`), ASE
        atoms (symbols, lattice, positions; phonopy's default masses) or a phonopy cell (copied).

    Raises
    ------
    StructureError
        Any other type.
    """
    if isinstance(cell, PhonopyAtoms):
        return cell.copy()
    if isinstance(cell, IStructure):
        return get_phonopy_structure(cell)
    if isinstance(cell, Atoms):
        return PhonopyAtoms(
            symbols=cell.get_chemical_symbols(), cell=np.array(cell.cell), positions=cell.positions
        )
    raise StructureError(
        f"expected a pymatgen Structure, ASE Atoms or PhonopyAtoms, got {type(cell).__name__}"
    )


def to_structure(cell: Structure | Atoms | PhonopyAtoms) -> Structure:
    """A new pymatgen ``Structure`` of a cell (lattice in Å).

    Parameters
    ----------
    cell : Structure, Atoms or PhonopyAtoms
        A pymatgen structure (copied), ASE atoms (through
        :class:`~pymatgen.io.ase.AseAtomsAdaptor`) or a phonopy cell (through
        :func:`pymatgen.io.phonopy.get_pmg_structure`, with its masses as the site property
        ``phonopy_masses``).

    Raises
    ------
    StructureError
        Any other type.
    """
    if isinstance(cell, IStructure):
        return Structure.from_sites(cell)
    if isinstance(cell, Atoms):
        return AseAtomsAdaptor.get_structure(cell)
    if isinstance(cell, PhonopyAtoms):
        return get_pmg_structure(cell)
    raise StructureError(
        f"expected a pymatgen Structure, ASE Atoms or PhonopyAtoms, got {type(cell).__name__}"
    )


def displaced_atoms(reference: Atoms, displacements: NDArray[np.float64]) -> Atoms:
    """A copy of ``reference`` with every atom moved by ``displacements`` (shape (N, 3), Å)."""
    atoms = reference.copy()
    atoms.positions = reference.positions + displacements
    return atoms


def supercell_atoms(
    phonon: Phonopy, displacements: NDArray[np.float64] | None = None
) -> list[Atoms]:
    """The supercell of ``phonon`` as ASE atoms, displaced by each of ``displacements``.

    Parameters
    ----------
    phonon : Phonopy
        Its supercell (``phonon.supercell``) is converted by :func:`to_ase_atoms`.
    displacements : ndarray, shape (n, N, 3), optional
        Displacements of the N supercell atoms, Å.

    Returns
    -------
    list of Atoms
        The undisplaced supercell alone when ``displacements`` is None, else the n
        displaced supercells.
    """
    base = to_ase_atoms(phonon.supercell)
    if displacements is None:
        return [base]
    return [displaced_atoms(base, displacement) for displacement in displacements]


def minimum_image_vectors(vectors: NDArray[np.float64], cell: Any) -> NDArray[np.float64]:
    """The shortest periodic images of Cartesian vectors (e.g. displacements), Å.

    Parameters
    ----------
    vectors : array-like, shape (..., 3)
        Cartesian vectors, Å (flattened to (n, 3)).
    cell : array-like, shape (3, 3) or ase Cell
        Lattice vectors (rows), Å; periodic in all three directions.

    Returns
    -------
    ndarray, shape (n, 3)
    """
    from ase.geometry import find_mic

    return find_mic(np.asarray(vectors).reshape(-1, 3), cell, pbc=True)[0]


# -- non-analytical term correction (Born effective charges) -------------------------------------


def _phonopy_nac_params(nac_params: Mapping[str, Any], n_atoms: int) -> dict[str, Any]:
    """``nac_params`` as numpy arrays with phonopy's unit factor, shapes checked."""
    from phonopy.interface.calculator import get_calculator_physical_units

    born = np.asarray(nac_params["born"], dtype=float)
    dielectric = np.asarray(nac_params["dielectric"], dtype=float)
    if born.shape != (n_atoms, 3, 3) or dielectric.shape != (3, 3):
        raise StructureError(
            f"Born effective charges of shape {born.shape} and dielectric tensor of shape "
            f"{dielectric.shape} do not fit a {n_atoms}-atom cell (({n_atoms}, 3, 3) and (3, 3))"
        )
    factor = nac_params.get("factor")
    if factor is None:
        factor = get_calculator_physical_units().nac_factor  # eV, Å (VASP's units)
    return {"born": born, "dielectric": dielectric, "factor": float(factor)}


def read_born(
    path: str | os.PathLike, structure: Structure, symprec: float = 1e-5
) -> dict[str, Any]:
    """NAC parameters of a phonopy BORN file, per atom of ``structure``, as plain lists.

    As in phonopy, the file refers to the primitive cell of the structure as given and lists
    its symmetry-independent atoms (the same atoms, in the same order, as for the given
    cell: the first site of each orbit); :func:`phonopy.file_IO.parse_BORN` reads them and
    expands them by symmetry onto every site of ``structure``, in its Cartesian frame.

    Parameters
    ----------
    path : str or PathLike
        BORN file: unit factor (optional), dielectric tensor (9 numbers), one line of 9
        numbers (Born effective charge, e) per independent atom.
    structure : Structure
        The crystal as given to the workflow.
    symprec : float
        phonopy's symmetry tolerance, Å.

    Returns
    -------
    dict
        ``born`` (n_sites x 3 x 3, e), ``dielectric`` (3 x 3) and, when the file gives it,
        ``factor``: the ``born`` of :class:`~tdphonon.flows.sscha.SSCHAMaker`.

    Raises
    ------
    StructureError
        Missing or malformed file, or one that does not fit the structure.
    """
    from phonopy.file_IO import parse_BORN

    path = Path(path)
    if not path.is_file():
        raise StructureError(f"BORN file not found: {path}")
    try:
        nac = parse_BORN(to_phonopy_atoms(structure), symprec=symprec, filename=path)
    except Exception as error:
        raise StructureError(
            f"cannot read Born effective charges of {structure.composition.reduced_formula} "
            f"from {path}: {error}"
        ) from None
    result: dict[str, Any] = {
        "born": np.asarray(nac["born"]).tolist(),
        "dielectric": np.asarray(nac["dielectric"]).tolist(),
    }
    if nac.get("factor") is not None:
        result["factor"] = float(nac["factor"])
    return result


def primitive_nac_params(
    structure: Structure, nac_params: Mapping[str, Any], symprec: float = 1e-3
) -> dict[str, Any]:
    """NAC parameters per site of ``structure`` mapped onto its standard primitive cell.

    The tensors are rotated into the frame of the primitive cell
    (:func:`map_to_standard_primitive`) and averaged over the sites that are one atom of it.

    Parameters
    ----------
    structure : Structure
        The crystal ``nac_params`` belong to.
    nac_params : mapping
        ``born`` (n_sites x 3 x 3), ``dielectric`` (3 x 3), optional ``factor``
        (:func:`read_born`).
    symprec : float
        Symmetry tolerance of the standardisation, Å.

    Returns
    -------
    dict
        The same keys for :func:`standard_primitive` ``(structure)``, as plain lists.
    """
    checked = _phonopy_nac_params(nac_params, len(structure))
    mapping = map_to_standard_primitive(structure, symprec)
    rotation = mapping.rotation
    rotated = np.einsum("ab,ibc,dc->iad", rotation, checked["born"], rotation)
    born = np.array(
        [rotated[mapping.atoms == j].mean(axis=0) for j in range(len(mapping.primitive))]
    )
    result = dict(nac_params)
    result["born"] = born.tolist()
    result["dielectric"] = (rotation @ checked["dielectric"] @ rotation.T).tolist()
    return result


def wyckoff_labels(phonon: Phonopy) -> list[str]:
    """Element and Wyckoff position of every supercell atom of ``phonon``, e.g. ``"O 3c"``.

    From spglib's analysis of the primitive cell (multiplicity counted in the conventional
    standard cell); symmetry-inequivalent orbits that share a label get ``#2``, ``#3``, ...
    """
    dataset = phonon.primitive_symmetry.dataset
    primitive = phonon.primitive
    orbit = np.asarray(dataset.equivalent_atoms)
    to_spglib = np.asarray(dataset.mapping_to_primitive)  # input atom -> spglib primitive atom
    spglib_orbit = {int(p): int(orbit[i]) for i, p in enumerate(to_spglib)}
    std_orbits = [spglib_orbit[int(p)] for p in dataset.std_mapping_to_primitive]
    labels: dict[int, str] = {}
    for i in range(len(primitive)):
        key = int(orbit[i])
        if key not in labels:
            label = f"{primitive.symbols[i]} {std_orbits.count(key)}{dataset.wyckoffs[i]}"
            same = sum(1 for v in labels.values() if v.split("#")[0] == label)
            labels[key] = label if same == 0 else f"{label}#{same + 1}"
    p2p, s2p = primitive.p2p_map, primitive.s2p_map
    return [labels[int(orbit[p2p[s]])] for s in s2p]
