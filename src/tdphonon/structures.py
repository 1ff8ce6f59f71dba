"""Reading and checking input crystals; choosing supercells.

Every check raises :class:`StructureError` with a one-line message naming the
problem, so command-line users never see a traceback from deep inside a library.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from phonopy import Phonopy
from pymatgen.core import Lattice, Structure
from pymatgen.io.phonopy import get_phonopy_structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from pymatgen.symmetry.bandstructure import HighSymmKpath


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
            from pymatgen.io.ase import AseAtomsAdaptor

            atoms = read(path)
        except Exception:
            raise StructureError(f"cannot read a structure from {path}: {pmg_error}") from None
        if not all(atoms.pbc) or atoms.cell.rank < 3:
            raise StructureError(
                f"{path} holds a non-periodic structure (a crystal with a 3D cell is needed)"
            ) from None
        return AseAtomsAdaptor.get_structure(atoms)


def check_structure(structure: Structure) -> None:
    """Raise :class:`StructureError` unless ``structure`` is an ordered 3D crystal."""
    if not isinstance(structure, Structure):
        raise StructureError(
            f"expected a periodic pymatgen Structure, got {type(structure).__name__}"
        )
    if not structure.is_ordered:
        raise StructureError(
            f"{structure.formula} is disordered (partial occupancies); phonons need an "
            "ordered structure: order it first (e.g. an SQS or pymatgen's "
            "OrderDisorderedStructureTransformation)"
        )
    if abs(structure.volume) < 1e-3 or not np.isfinite(structure.lattice.matrix).all():
        raise StructureError(f"{structure.formula} has a degenerate lattice")
    if len(structure) > 1:
        distances = structure.distance_matrix[np.triu_indices(len(structure), 1)]
        if distances.min() < 0.5:
            raise StructureError(
                f"{structure.formula} has atoms closer than 0.5 Å ({distances.min():.3f} Å)"
            )


def standard_primitive(structure: Structure, symprec: float = 1e-3) -> Structure:
    """The standard primitive cell (Setyawan-Curtarolo), whose band path is well defined."""
    check_structure(structure)
    return SpacegroupAnalyzer(structure, symprec=symprec).get_primitive_standard_structure()


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


def zone_boundary_qpoints(structure: Structure) -> NDArray[np.float64]:
    """Labelled high-symmetry q-points with coordinates in multiples of 1/2.

    These (Gamma, X, M, R, L, ...) are where soft modes of high-symmetry phases sit;
    a supercell commensurate with them samples those modes directly. Fractional
    coordinates of the reciprocal lattice of ``structure`` (a standard primitive cell).
    """
    kpath = HighSymmKpath(structure, path_type="setyawan_curtarolo", symprec=1e-3)
    points = np.array(list(kpath.kpath["kpoints"].values()), dtype=float)
    halves = np.all(np.abs(2 * points - np.rint(2 * points)) < 1e-6, axis=1)
    return points[halves]


def _candidates(lattice: NDArray[np.float64], volume: float, max_cells: int):
    """Integer matrices (rows multiply ``lattice``) closest to cubic shapes, by size."""
    yield np.diag(np.ones(3, dtype=int))
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
) -> NDArray[np.int_]:
    """The smallest near-cubic supercell with images ``min_length`` Å apart.

    Candidates are the integer matrices closest to simple-, face- and body-centred
    cubic shapes of each size (Hart-Forcade style rounding of :math:`s T L^{-1}`), the
    same doubled, and diagonal supercells. Among those whose periodic images are at
    least ``min_length`` apart, the smallest one commensurate with ``qpoints`` is
    chosen; if none within ``max_atoms`` is, commensurability is dropped.

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
    widths = structure.volume / np.linalg.norm(
        np.cross(np.roll(lattice, -1, 0), np.roll(lattice, -2, 0)), axis=1
    )
    diagonal = np.ceil(min_length / widths - 1e-8).astype(int)
    candidates = [np.diag(diagonal), np.diag(diagonal + diagonal % 2)]
    candidates += list(_candidates(lattice, structure.volume, max_atoms // len(structure)))

    best: dict[bool, NDArray[np.int_]] = {}
    for matrix in candidates:
        size = round(np.linalg.det(matrix))
        if size * len(structure) > max_atoms:
            continue
        products = qpoints @ matrix.T
        commensurate = bool(np.all(np.abs(products - np.rint(products)) < 1e-6))
        if commensurate in best and size >= round(np.linalg.det(best[commensurate])):
            continue
        if image_distance(matrix @ lattice) >= min_length - 1e-6:
            best[commensurate] = matrix
    if not best:
        raise StructureError(
            f"a supercell of {structure.composition.reduced_formula} with periodic images "
            f"{min_length} Å apart needs more than {max_atoms} atoms"
        )
    chosen = best.get(True, best.get(False))
    return chosen.T  # rows multiply the lattice above; phonopy wants columns


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
    structure: Structure, supercell_matrix: NDArray[np.int_] | list, symprec: float = 1e-5
) -> Phonopy:
    """Phonopy object with ``structure`` as unit and primitive cell.

    ``supercell_matrix`` is in phonopy's convention (3 integers for a diagonal one).
    """
    matrix = np.asarray(supercell_matrix, dtype=int)
    if matrix.shape == (3,):
        matrix = np.diag(matrix)
    if matrix.shape != (3, 3) or round(abs(np.linalg.det(matrix))) < 1:
        raise StructureError(f"invalid supercell matrix {matrix.tolist()}")
    return Phonopy(
        get_phonopy_structure(structure),
        supercell_matrix=matrix,
        primitive_matrix=np.eye(3),
        symprec=symprec,
    )
