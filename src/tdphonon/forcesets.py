"""DFT phonon force sets: labelled supercells read from phonopy, phono3py or extXYZ files.

A :class:`ForceSet` holds the displaced supercells of one crystal (one supercell matrix) with
their DFT forces and, when the source has them, energies and stresses. Labels the source does
not carry stay ``None``: they are never invented. The phonopy dataset of the set (finite
displacements, phonopy "type 1", or random displacements, "type 2") is kept so that force
constants can be rebuilt from other forces on the *same* supercells
(:mod:`tdphonon.evaluation`).

Readers (all go through the libraries' own loaders: :func:`phonopy.load`,
:func:`phono3py.load`, :func:`ase.io.read`):

* :func:`read_phonopy`: ``phonopy_params.yaml[.xz]`` or ``phonopy_disp.yaml`` + ``FORCE_SETS``;
* :func:`read_phono3py`: ``phono3py_params*.yaml[.xz]`` or ``phono3py_disp.yaml`` +
  ``FORCES_FC3``; gives one set for the fc3 supercell and, when present, one for the fc2
  (phonon) supercell;
* :func:`read_extxyz`: extended XYZ with energies / forces / stresses;
* :func:`read_force_sets`: any of the files above, or folders holding them.

Units: Å, eV, eV/Å; stresses in eV/Å³ with ASE's sign convention (positive = tensile).
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from tdphonon.structures import (
    displaced_atoms,
    minimum_image_vectors,
    to_ase_atoms,
    to_phonopy_atoms,
)

__all__ = [
    "ForceSet",
    "ForceSetError",
    "find_force_set_files",
    "finite_energy",
    "read_extxyz",
    "read_force_sets",
    "read_phono3py",
    "read_phonopy",
    "split_by_compound",
    "write_extxyz",
]


class ForceSetError(ValueError):
    """A force set cannot be read or is inconsistent (one-line message naming the problem)."""


@dataclass
class ForceSet:
    """Labelled displaced supercells of one crystal.

    Attributes
    ----------
    name : str
        Compound name (folder or file stem), used to split by compound.
    unitcell : ase.Atoms
        Unit cell the supercell matrix refers to.
    supercell_matrix : numpy.ndarray
        (3, 3) integer matrix: supercell = supercell_matrix applied to the unit cell (phonopy
        convention).
    primitive_matrix : numpy.ndarray or None
        (3, 3) primitive matrix relative to the unit cell (phonopy convention); None: unit
        cell is primitive.
    reference : ase.Atoms
        The undisplaced (ideal) supercell.
    supercells : list of ase.Atoms
        Displaced supercells (same atom order as ``reference``).
    forces : list of numpy.ndarray
        DFT forces, eV/Å, one (n_atoms, 3) array per supercell.
    energies : list of float or None
        DFT total energy per supercell in eV, None where the source has none.
    stresses : list of numpy.ndarray or None
        DFT stress (3, 3) in eV/Å³ (ASE sign), None where absent.
    dataset : dict
        phonopy displacement dataset without forces: type 1 (``natom``, ``first_atoms``
        with ``number`` and ``displacement``) for finite displacements, type 2
        (``displacements``, (n, n_atoms, 3)) for random ones.
    harmonic_indices : list of int
        Indices of :attr:`supercells` that make up ``dataset`` (the harmonic force
        constants), in the dataset's order.
    reference_forces : numpy.ndarray or None
        DFT residual forces of the undisplaced supercell, when the source has them.
    reference_energy : float or None
        DFT energy of the undisplaced supercell, when the source has it.
    source : str
        Where the data came from (path or store query).
    """

    name: str
    unitcell: Atoms
    supercell_matrix: np.ndarray
    primitive_matrix: np.ndarray | None
    reference: Atoms
    supercells: list[Atoms]
    forces: list[np.ndarray]
    energies: list[float | None]
    stresses: list[np.ndarray | None]
    dataset: dict[str, Any]
    harmonic_indices: list[int]
    reference_forces: np.ndarray | None = None
    reference_energy: float | None = None
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.supercell_matrix = np.asarray(self.supercell_matrix, dtype=int).reshape(3, 3)
        if self.primitive_matrix is not None:
            self.primitive_matrix = np.asarray(self.primitive_matrix, dtype=float).reshape(3, 3)
        n = len(self.supercells)
        where = f"force set {self.name!r} ({self.source})"
        if n == 0:
            raise ForceSetError(f"{where} holds no labelled supercells")
        if len(self.forces) != n:
            raise ForceSetError(f"{where}: {len(self.forces)} force arrays for {n} supercells")
        if len(self.energies) != n or len(self.stresses) != n:
            raise ForceSetError(f"{where}: energies/stresses do not match the {n} supercells")
        n_ref = len(self.reference)
        for i, (atoms, forces) in enumerate(zip(self.supercells, self.forces, strict=True)):
            forces = np.asarray(forces, dtype=float)
            if forces.shape != (len(atoms), 3):
                raise ForceSetError(
                    f"{where}: forces of supercell {i} have shape {forces.shape}, expected "
                    f"({len(atoms)}, 3) for its {len(atoms)} atoms"
                )
            if len(atoms) != n_ref:
                raise ForceSetError(
                    f"{where}: supercell {i} has {len(atoms)} atoms, the reference {n_ref}"
                )
            if not np.all(np.isfinite(forces)):
                raise ForceSetError(f"{where}: forces of supercell {i} are not finite")
            self.forces[i] = forces
        for i, stress in enumerate(self.stresses):
            if stress is not None:
                stress = np.asarray(stress, dtype=float)
                if stress.size == 6:
                    from ase.stress import voigt_6_to_full_3x3_stress

                    stress = voigt_6_to_full_3x3_stress(stress)
                self.stresses[i] = stress.reshape(3, 3)
        bad = [i for i in self.harmonic_indices if not 0 <= i < n]
        if bad:
            raise ForceSetError(f"{where}: harmonic indices {bad[:5]} out of range")

    # -- properties -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.supercells)

    @property
    def elements(self) -> set[str]:
        """Chemical symbols present."""
        return set(self.reference.get_chemical_symbols())

    @property
    def n_energies(self) -> int:
        """Number of supercells with an energy label."""
        return sum(e is not None for e in self.energies)

    @property
    def n_stresses(self) -> int:
        """Number of supercells with a stress label."""
        return sum(s is not None for s in self.stresses)

    @property
    def is_random(self) -> bool:
        """True for a random-displacement (phonopy type-2) dataset."""
        return "displacements" in self.dataset

    def harmonic_forces(self) -> np.ndarray:
        """DFT forces of the harmonic dataset's supercells, (n, n_atoms, 3) eV/Å."""
        return np.stack([self.forces[i] for i in self.harmonic_indices])

    def summary(self) -> dict[str, Any]:
        """Short JSON-serialisable description (for provenance)."""
        return {
            "name": self.name,
            "formula": self.reference.get_chemical_formula(),
            "n_supercells": len(self),
            "n_atoms": len(self.reference),
            "n_energies": self.n_energies,
            "n_stresses": self.n_stresses,
            "displacements": "random" if self.is_random else "finite",
            "source": self.source,
        }


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@contextmanager
def _auto_primitive_matrix() -> Iterator[None]:
    """Silence phonopy 4's note that a file without a primitive matrix gets ``'auto'``.

    The force sets are read on their supercells; the primitive cell only sets where the
    evaluation mesh lies, and the auto-detected one is the right choice for files that
    do not name theirs.
    """
    from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        yield


def finite_energy(value: Any) -> float | None:
    """An energy label as a float (eV): the first number of ``value``; None if absent or not finite."""
    if value is None:
        return None
    value = float(np.asarray(value).reshape(-1)[0])
    return value if np.isfinite(value) else None


def _sets_from_phonopy_dataset(
    dataset: dict[str, Any],
    reference: Atoms,
    *,
    name: str,
    unitcell: Atoms,
    supercell_matrix: Any,
    primitive_matrix: Any,
    source: str,
) -> ForceSet:
    """ForceSet from a phonopy (fc2) or phono3py (fc3) dataset with forces."""
    n_atoms = len(reference)
    supercells: list[Atoms] = []
    forces: list[np.ndarray] = []
    energies: list[float | None] = []
    harmonic: list[int] = []
    if not dataset:
        raise ForceSetError(f"{source}: no displacement dataset")
    if "displacements" in dataset:  # type 2
        disps = np.asarray(dataset["displacements"], dtype=float)
        if "forces" not in dataset or dataset["forces"] is None:
            raise ForceSetError(f"{source}: the displacement dataset has no forces")
        all_forces = np.asarray(dataset["forces"], dtype=float)
        if disps.ndim != 3 or disps.shape[1] != n_atoms:
            raise ForceSetError(
                f"{source}: displacements shape {disps.shape} does not match the supercell "
                f"({n_atoms} atoms)"
            )
        if all_forces.shape != disps.shape:
            raise ForceSetError(
                f"{source}: forces shape {all_forces.shape} does not match displacements "
                f"{disps.shape} ({n_atoms} atoms per supercell)"
            )
        raw_energies = dataset.get("supercell_energies")
        for i, d in enumerate(disps):
            supercells.append(displaced_atoms(reference, d))
            forces.append(all_forces[i])
            energies.append(None if raw_energies is None else finite_energy(raw_energies[i]))
        harmonic = list(range(len(disps)))
        disp_dataset: dict[str, Any] = {"displacements": disps}
    elif "first_atoms" in dataset:  # type 1 (phonopy) or phono3py fc3 type 1
        first_atoms = []
        for entry in dataset["first_atoms"]:
            if "forces" not in entry:
                raise ForceSetError(f"{source}: displacement dataset without forces")
            d = np.zeros((n_atoms, 3))
            d[entry["number"]] = entry["displacement"]
            harmonic.append(len(supercells))
            supercells.append(displaced_atoms(reference, d))
            forces.append(np.asarray(entry["forces"], dtype=float))
            energies.append(finite_energy(entry.get("supercell_energy")))
            first_atoms.append(
                {"number": int(entry["number"]), "displacement": list(entry["displacement"])}
            )
            for second in entry.get("second_atoms", []):
                if not second.get("included", True) or "forces" not in second:
                    continue
                d2 = d.copy()
                d2[second["number"]] += second["displacement"]
                supercells.append(displaced_atoms(reference, d2))
                forces.append(np.asarray(second["forces"], dtype=float))
                energies.append(finite_energy(second.get("supercell_energy")))
        disp_dataset = {"natom": n_atoms, "first_atoms": first_atoms}
    else:
        raise ForceSetError(f"{source}: unknown displacement dataset (keys {sorted(dataset)})")
    for i, f in enumerate(forces):
        if np.shape(f) != (n_atoms, 3):
            raise ForceSetError(
                f"{source}: forces of supercell {i} have shape {np.shape(f)}, expected "
                f"({n_atoms}, 3)"
            )
    return ForceSet(
        name=name,
        unitcell=unitcell,
        supercell_matrix=np.asarray(supercell_matrix),
        primitive_matrix=None if primitive_matrix is None else np.asarray(primitive_matrix),
        reference=reference,
        supercells=supercells,
        forces=forces,
        energies=energies,
        stresses=[None] * len(supercells),
        dataset=disp_dataset,
        harmonic_indices=harmonic,
        source=source,
    )


def _compound_name(path: Path) -> str:
    """Folder name for generic file names, else the file stem without known suffixes."""
    stem = path.name
    for suffix in (".xz", ".gz", ".bz2", ".lzma", ".yaml", ".yml", ".xyz", ".extxyz"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    generic = {"phonopy_params", "phonopy_disp", "phono3py_params", "phono3py_disp", "phonopy"}
    if stem in generic or (
        stem.startswith(("phono3py_params", "phonopy_params"))
        and len(stem) <= len("phono3py_params")
    ):
        return path.resolve().parent.name
    for prefix in ("phono3py_params_", "phonopy_params_", "phono3py_", "phonopy_"):
        if stem.startswith(prefix):
            stem = stem[len(prefix) :]
    return stem.split("__")[0] if "__" in stem else stem


def _check_file(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"force-set file not found: {path}")
    if not path.is_file():
        raise ForceSetError(f"{path} is not a file")
    return path


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


def read_phonopy(
    path: str | os.PathLike,
    force_sets: str | os.PathLike | None = None,
    name: str | None = None,
) -> ForceSet:
    """Read a phonopy force set.

    Parameters
    ----------
    path : str or os.PathLike
        ``phonopy_params.yaml[.xz]`` (self-contained) or ``phonopy_disp.yaml``.
    force_sets : str or os.PathLike, optional
        ``FORCE_SETS`` file for a ``phonopy_disp.yaml``; by default a ``FORCE_SETS`` next to
        it is used.
    name : str, optional
        Compound name; default: the folder name for generic file names, else the file stem.

    Returns
    -------
    ForceSet

    Raises
    ------
    FileNotFoundError, ForceSetError
        Missing or unreadable file, no forces, forces inconsistent with the supercell.
    """
    import phonopy

    path = _check_file(path)
    if force_sets is None and (path.parent / "FORCE_SETS").is_file():
        force_sets = path.parent / "FORCE_SETS"
    if force_sets is not None:
        force_sets = _check_file(force_sets)
    try:
        with _auto_primitive_matrix():
            ph = phonopy.load(
                path,
                force_sets_filename=force_sets,
                produce_fc=False,
                log_level=0,
            )
    except Exception as err:
        raise ForceSetError(
            f"cannot read {path} with phonopy: {type(err).__name__}: {err}"
        ) from None
    if (
        ph.dataset is None
        or (
            "first_atoms" in ph.dataset
            and not all("forces" in e for e in ph.dataset["first_atoms"])
        )
        or ("displacements" in ph.dataset and ph.dataset.get("forces") is None)
    ):
        raise ForceSetError(f"{path} has no forces (pass the FORCE_SETS file)")
    return _sets_from_phonopy_dataset(
        ph.dataset,
        to_ase_atoms(ph.supercell),
        name=name or _compound_name(path),
        unitcell=to_ase_atoms(ph.unitcell),
        supercell_matrix=ph.supercell_matrix,
        primitive_matrix=ph.primitive_matrix,
        source=str(path) + (f" + {force_sets}" if force_sets else ""),
    )


def read_phono3py(
    path: str | os.PathLike,
    forces_fc3: str | os.PathLike | None = None,
    name: str | None = None,
) -> list[ForceSet]:
    """Read a phono3py force set.

    Parameters
    ----------
    path : str or os.PathLike
        ``phono3py_params*.yaml[.xz]`` or ``phono3py_disp.yaml``.
    forces_fc3 : str or os.PathLike, optional
        ``FORCES_FC3`` for a ``phono3py_disp.yaml``; by default ``FORCES_FC3`` next to it.
    name : str, optional
        Compound name (default from the file name).

    Returns
    -------
    list of ForceSet
        The fc3 supercell set (named ``<name>``; its harmonic dataset = the first
        displacements, or all of a random set) and, if the file has a separate fc2 (phonon)
        supercell dataset, a second set named ``<name>-fc2``.
    """
    import phono3py

    path = _check_file(path)
    if forces_fc3 is None:
        # FORCES_FC3 next to the file, or FORCES_FC3_<suffix> for phono3py_<suffix>.yaml
        suffix = path.name.split(".")[0].removeprefix("phono3py").removeprefix("_disp")
        for candidate in ("FORCES_FC3", f"FORCES_FC3{suffix}"):
            if "params" not in path.name and (path.parent / candidate).is_file():
                forces_fc3 = path.parent / candidate
    if forces_fc3 is not None:
        forces_fc3 = _check_file(forces_fc3)
    try:
        with _auto_primitive_matrix():
            ph3 = phono3py.load(path, forces_fc3_filename=forces_fc3, produce_fc=False, log_level=0)
    except Exception as err:
        raise ForceSetError(
            f"cannot read {path} with phono3py: {type(err).__name__}: {err}"
        ) from None
    name = name or _compound_name(path)
    source = str(path) + (f" + {forces_fc3}" if forces_fc3 else "")
    unitcell = to_ase_atoms(ph3.unitcell)
    sets = []
    if ph3.dataset:
        sets.append(
            _sets_from_phonopy_dataset(
                ph3.dataset,
                to_ase_atoms(ph3.supercell),
                name=name,
                unitcell=unitcell,
                supercell_matrix=ph3.supercell_matrix,
                primitive_matrix=ph3.primitive_matrix,
                source=source,
            )
        )
    if ph3.phonon_dataset:
        sets.append(
            _sets_from_phonopy_dataset(
                ph3.phonon_dataset,
                to_ase_atoms(ph3.phonon_supercell),
                name=f"{name}-fc2",
                unitcell=unitcell,
                supercell_matrix=ph3.phonon_supercell_matrix,
                primitive_matrix=ph3.primitive_matrix,
                source=source + " (fc2 dataset)",
            )
        )
    if not sets:
        raise ForceSetError(f"{path} has no displacement dataset with forces")
    return sets


def read_extxyz(
    path: str | os.PathLike,
    name: str | None = None,
    reference_index: int | None = None,
) -> ForceSet:
    """Read labelled supercells of one crystal from an extended XYZ file (via :func:`ase.io.read`).

    Frames carry forces (required) and optionally energy and stress (ASE's
    ``SinglePointCalculator`` labels). The undisplaced supercell is the frame whose
    ``info["undisplaced"]`` is true, or ``reference_index``; otherwise the mean positions of
    all frames (the displacements of a phonon set average out). The supercell matrix is
    taken from ``info["supercell_matrix"]`` of the first frame if present (9 integers),
    else the identity (the unit cell is the supercell). Displacements are treated as
    random (fc2 by symfc).

    Raises
    ------
    ForceSetError
        No frames, frames without forces, different atom counts or orders.
    """
    from ase.io import read

    path = _check_file(path)
    try:
        frames = read(path, index=":", format="extxyz")
    except Exception as err:
        raise ForceSetError(f"cannot read {path} as extended XYZ: {err}") from None
    if not frames:
        raise ForceSetError(f"{path} holds no structures")
    first = frames[0]
    symbols = first.get_chemical_symbols()
    if reference_index is None:
        flagged = [i for i, a in enumerate(frames) if a.info.get("undisplaced")]
        reference_index = flagged[0] if flagged else None
    supercells, forces, energies, stresses = [], [], [], []
    reference_forces = reference_energy = None
    for i, atoms in enumerate(frames):
        if atoms.get_chemical_symbols() != symbols:
            raise ForceSetError(f"{path}: frame {i} has other atoms than frame 0")
        calc = atoms.calc
        results = getattr(calc, "results", {}) if calc is not None else {}
        if "forces" not in results:
            raise ForceSetError(f"{path}: frame {i} has no forces")
        f = np.asarray(results["forces"], dtype=float)
        e = finite_energy(results.get("energy", results.get("free_energy")))
        s = results.get("stress")
        clean = Atoms(symbols, cell=atoms.cell, positions=atoms.positions, pbc=True)
        if i == reference_index:
            reference_forces, reference_energy = f, e
            reference = clean
            continue
        supercells.append(clean)
        forces.append(f)
        energies.append(e)
        stresses.append(None if s is None else np.asarray(s, dtype=float))
    if reference_index is None:
        ref_pos = supercells[0].positions + np.mean(
            [
                minimum_image_vectors(a.positions - supercells[0].positions, supercells[0].cell)
                for a in supercells
            ],
            axis=0,
        )
        reference = Atoms(symbols, cell=supercells[0].cell, positions=ref_pos, pbc=True)
    smat = np.asarray(first.info.get("supercell_matrix", np.eye(3)), dtype=int).reshape(3, 3)
    unitcell = reference.copy()
    if not np.allclose(smat, np.eye(3)):
        from phonopy.structure.cells import get_primitive

        prim = get_primitive(to_phonopy_atoms(reference), np.linalg.inv(smat), symprec=1e-3)
        unitcell = to_ase_atoms(prim)
    disps = np.array(
        [
            minimum_image_vectors(a.positions - reference.positions, reference.cell)
            for a in supercells
        ]
    )
    return ForceSet(
        name=name or str(first.info.get("name") or _compound_name(path)),
        unitcell=unitcell,
        supercell_matrix=smat,
        primitive_matrix=None,
        reference=reference,
        supercells=supercells,
        forces=forces,
        energies=energies,
        stresses=stresses,
        dataset={"displacements": disps},
        harmonic_indices=list(range(len(supercells))),
        reference_forces=reference_forces,
        reference_energy=reference_energy,
        source=str(path),
    )


def write_extxyz(force_set: ForceSet, path: str | os.PathLike) -> Path:
    """Write a force set as extended XYZ (undisplaced supercell first, flagged ``undisplaced``).

    Only labels present are written: a frame without an energy gets none.

    Returns
    -------
    Path
        The file written.
    """
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frames = []
    ref = force_set.reference.copy()
    ref_results: dict[str, Any] = {
        "forces": (
            force_set.reference_forces
            if force_set.reference_forces is not None
            else np.zeros((len(ref), 3))
        )
    }
    if force_set.reference_energy is not None:
        ref_results["energy"] = force_set.reference_energy
    ref.calc = SinglePointCalculator(ref, **ref_results)
    ref.info.update(
        undisplaced=True,
        name=force_set.name,
        supercell_matrix=" ".join(str(int(x)) for x in force_set.supercell_matrix.reshape(-1)),
    )
    if force_set.reference_forces is not None:
        frames.append(ref)
    for atoms, f, e, s in zip(
        force_set.supercells,
        force_set.forces,
        force_set.energies,
        force_set.stresses,
        strict=True,
    ):
        frame = atoms.copy()
        results: dict[str, Any] = {"forces": f}
        if e is not None:
            results["energy"] = e
        if s is not None:
            results["stress"] = s
        frame.calc = SinglePointCalculator(frame, **results)
        frame.info["name"] = force_set.name
        frame.info["supercell_matrix"] = ref.info["supercell_matrix"]
        frames.append(frame)
    path = Path(path)
    write(path, frames, format="extxyz")
    return path


# ---------------------------------------------------------------------------------------------
# files and folders
# ---------------------------------------------------------------------------------------------

_XYZ_SUFFIXES = (".xyz", ".extxyz")


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.startswith("phono3py") and (".yaml" in name or ".yml" in name):
        return "phono3py"
    if "phono3py_params" in name:
        return "phono3py"
    if (
        name.startswith("phonopy_disp")
        or "phonopy_params" in name
        or ("phonopy" in name and "params" in name)
    ):
        return "phonopy"
    if name.endswith(_XYZ_SUFFIXES):
        return "extxyz"
    return None


def find_force_set_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Force-set files among ``paths`` (files, or folders searched recursively), sorted.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    ForceSetError
        A given file is not a recognised force-set file, or nothing was found.
    """
    found: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"force-set path not found: {path}")
        if path.is_dir():
            found.extend(sorted(f for f in path.rglob("*") if f.is_file() and _kind(f)))
        elif _kind(path) is None:
            raise ForceSetError(
                f"{path}: not a recognised force-set file (phonopy_params*.yaml[.xz], "
                "phonopy_disp.yaml, phono3py*.yaml[.xz], *.xyz/*.extxyz)"
            )
        else:
            found.append(path)
    if not found:
        raise ForceSetError(f"no force-set files found in {', '.join(map(str, paths))}")
    return list(dict.fromkeys(found))


def read_force_sets(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, fc2_only: bool = False
) -> list[ForceSet]:
    """Read all force sets in files or folders.

    Parameters
    ----------
    paths : path or iterable of paths
        Files (phonopy, phono3py, extXYZ; see the module docstring) or folders.
    fc2_only : bool, default False
        From phono3py files with a separate fc2 dataset, keep only the fc2 set.

    Returns
    -------
    list of ForceSet
        Names made unique (``name``, ``name-2``, ...).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sets: list[ForceSet] = []
    for path in find_force_set_files(paths):
        kind = _kind(path)
        if kind == "phonopy":
            sets.append(read_phonopy(path))
        elif kind == "phono3py":
            group = read_phono3py(path)
            if fc2_only and len(group) > 1:
                group = [s for s in group if s.name.endswith("-fc2")]
            sets.extend(group)
        else:
            sets.append(read_extxyz(path))
    seen: dict[str, int] = {}
    for s in sets:
        if s.name in seen:
            seen[s.name] += 1
            s.name = f"{s.name}-{seen[s.name]}"
        else:
            seen[s.name] = 1
    return sets


def split_by_compound(
    force_sets: Sequence[ForceSet],
    validation: Sequence[str] | None = None,
    *,
    fraction: float = 0.2,
    seed: int = 0,
) -> tuple[list[ForceSet], list[ForceSet]]:
    """Split force sets into training and validation by compound (never by structure).

    Parameters
    ----------
    force_sets : sequence of ForceSet
    validation : sequence of str, optional
        Names of the validation compounds; otherwise a seeded random choice.
    fraction : float, default 0.2
        Fraction of compounds for validation (at least 1) when ``validation`` is None.
    seed : int, default 0
        Seed of the random choice (deterministic).

    Returns
    -------
    train, validation : list of ForceSet

    Raises
    ------
    ForceSetError
        Unknown validation names, or a split leaving one side empty.
    """
    names = [s.name for s in force_sets]
    if validation is not None:
        unknown = sorted(set(validation) - set(names))
        if unknown:
            raise ForceSetError(
                f"validation compound(s) {unknown} not among the force sets {sorted(names)}"
            )
        chosen = set(validation)
    else:
        if len(names) < 2:
            raise ForceSetError("at least two compounds are needed to split by compound")
        n_val = min(len(names) - 1, max(1, round(fraction * len(names))))
        chosen = set(random.Random(seed).sample(sorted(names), n_val))
    train = [s for s in force_sets if s.name not in chosen]
    val = [s for s in force_sets if s.name in chosen]
    if not train:
        raise ForceSetError("the split leaves no training compounds")
    return train, val
