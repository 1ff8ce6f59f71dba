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
* :func:`read_phonondb`: one compound of A. Togo's phonon database (phonondb) as it is
  distributed: a ``materials-id-*.tar.lzma`` archive (read in memory) or its unpacked folder
  (``POSCAR-unitcell``, ``phonopy.conf``, ``FORCE_SETS``, ``BORN`` where polar); the
  non-analytical correction from ``BORN`` is kept in :attr:`ForceSet.nac_params`;
* :func:`read_force_sets` / :func:`iter_force_sets`: any of the above, or folders holding
  them (searched recursively). Broken phonondb archives in a long list are skipped with a
  logged warning naming each, not fatal (:attr:`ForceSets.skipped`).

Units: Å, eV, eV/Å; stresses in eV/Å³ with ASE's sign convention (positive = tensile).
"""

from __future__ import annotations

import logging
import os
import random
import re
import tarfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
    "PHONONDB",
    "ForceSet",
    "ForceSetError",
    "ForceSets",
    "find_force_set_files",
    "finite_energy",
    "is_phonondb_folder",
    "iter_force_sets",
    "read_extxyz",
    "read_force_sets",
    "read_phono3py",
    "read_phonondb",
    "read_phonopy",
    "split_by_compound",
    "supercell_weight",
    "write_extxyz",
]


#: Provenance keys that go into :meth:`ForceSet.summary` (not the archive's location).
_SUMMARY_KEYS = ("database", "release", "functional", "license", "mp_id")


#: Displacement (Å) at which the loss weight of a finite-displacement supercell is 1
#: (:func:`supercell_weight`).
REFERENCE_DISPLACEMENT = 0.01

#: RMS force (eV/Å) at or below which a random-displacement (thermal) snapshot has weight 1;
#: about the RMS force of a 0.01 Å finite-displacement supercell, so that both kinds of data
#: weigh alike in one training set (:func:`supercell_weight`).
REFERENCE_FORCE = 0.05

#: Atoms moved by more than this (Å) count as displaced when telling a finite-displacement
#: supercell (one or two atoms moved) from a random-displacement snapshot.
_DISPLACED = 1e-4


def supercell_weight(displacements: np.ndarray, forces: np.ndarray) -> float:
    """Weight of one displaced supercell in a fit to force constants.

    The weighted force error measures force-constant errors: per unit displacement for
    finite displacements, relative to the snapshot's own forces for random displacements,
    so that snapshots far from equilibrium (random displacements of 1 Å, forces of tens of
    eV/Å) do not drown those near it, which set the phonons. Used by fine-tuning
    (``FineTuneSettings.force_constant_weighting``) and by the evaluation of random sets.

    Parameters
    ----------
    displacements : ndarray, shape (n_atoms, 3)
        Displacements from the undisplaced supercell, Å.
    forces : ndarray, shape (n_atoms, 3)
        DFT forces relative to the undisplaced supercell, eV/Å.

    Returns
    -------
    float
        ``(REFERENCE_DISPLACEMENT / u_max)²`` (u_max >= 1e-3 Å) when at most two atoms are
        displaced (finite displacements, phono3py pairs included);
        ``min(1, (REFERENCE_FORCE / F_rms)²)`` for a snapshot with more atoms displaced.
    """
    norms = np.linalg.norm(displacements, axis=1)
    if np.count_nonzero(norms > _DISPLACED) <= 2:
        return (REFERENCE_DISPLACEMENT / max(float(norms.max()), 1e-3)) ** 2
    rms = float(np.sqrt(np.mean(np.sum(np.asarray(forces) ** 2, axis=1))))
    return min(1.0, (REFERENCE_FORCE / max(rms, 1e-12)) ** 2)


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
    metadata : dict
        Free-form extras; ``metadata["provenance"]`` holds the database, release,
        functional, license and citation where the reader knows them (phonondb).
    nac_params : dict or None
        Non-analytical term correction of the DFT calculation, phonopy's ``nac_params``
        (``born`` (n_primitive, 3, 3) in the order of the primitive cell, ``dielectric``
        (3, 3), ``factor``); used for frequencies (:mod:`tdphonon.evaluation`). None: the
        source has no Born charges.
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
    nac_params: dict[str, Any] | None = None

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

    def displacements(self, index: int) -> np.ndarray:
        """Displacements (Å, minimum image) of supercell ``index`` from the undisplaced one,
        shape (n_atoms, 3)."""
        from tdphonon.structures import minimum_image_vectors

        moved = self.supercells[index].positions - self.reference.positions
        return minimum_image_vectors(moved, self.reference.cell)

    def loss_weights(self) -> np.ndarray:
        """:func:`supercell_weight` of every displaced supercell (from the DFT forces relative
        to the undisplaced supercell's), shape (n_supercells,)."""
        reference = 0.0 if self.reference_forces is None else self.reference_forces
        return np.array(
            [
                supercell_weight(self.displacements(i), f - reference)
                for i, f in enumerate(self.forces)
            ]
        )

    def harmonic_forces(self) -> np.ndarray:
        """DFT forces of the harmonic dataset's supercells, (n, n_atoms, 3) eV/Å."""
        return np.stack([self.forces[i] for i in self.harmonic_indices])

    def training_subset(self, max_supercells: int, seed: int = 0) -> ForceSet:
        """At most ``max_supercells`` displaced supercells, for training only.

        The rule: a finite-displacement (type-1) set groups its supercells by displaced
        atom (the symmetry-distinct atoms phonopy chose) and takes them round-robin over the
        atoms, in a seeded order within and across atoms, so that every distinct atom is
        represented before any gets a second direction; a random-displacement set takes a
        seeded random choice. Other displaced supercells (e.g. phono3py second
        displacements) count as one group each. The subset has no harmonic dataset (it
        cannot be evaluated); ``metadata["subset"]`` records the rule and the chosen
        indices.

        Parameters
        ----------
        max_supercells : int
            Maximum number of displaced supercells kept (>= 1).
        seed : int
            Seed of the choice (the same seed gives the same subset).

        Returns
        -------
        ForceSet
            ``self`` when it holds no more than ``max_supercells`` supercells.
        """
        if max_supercells < 1:
            raise ValueError(f"max_supercells must be >= 1, got {max_supercells}")
        n = len(self)
        if n <= max_supercells:
            return self
        rng = np.random.default_rng([seed, n])
        groups: dict[Any, list[int]] = {}
        first_atoms = self.dataset.get("first_atoms") or []
        for position, index in enumerate(self.harmonic_indices):
            key = first_atoms[position]["number"] if position < len(first_atoms) else index
            groups.setdefault(key, []).append(index)
        grouped = {i for members in groups.values() for i in members}
        for index in range(n):
            if index not in grouped:
                groups[("extra", index)] = [index]
        ordered = [list(rng.permutation(members)) for members in groups.values()]
        ordered = [ordered[i] for i in rng.permutation(len(ordered))]
        chosen: list[int] = []
        while len(chosen) < max_supercells:
            for members in ordered:
                if members and len(chosen) < max_supercells:
                    chosen.append(int(members.pop(0)))
        return replace(
            self,
            supercells=[self.supercells[i] for i in chosen],
            forces=[self.forces[i] for i in chosen],
            energies=[self.energies[i] for i in chosen],
            stresses=[self.stresses[i] for i in chosen],
            dataset={},
            harmonic_indices=[],
            metadata={
                **self.metadata,
                "subset": {"of": n, "indices": chosen, "seed": seed, "rule": "round-robin"},
            },
        )

    def split_snapshots(self, fraction: float, seed: int = 0) -> tuple[ForceSet, ForceSet]:
        """Hold out a seeded random ``fraction`` of a random-displacement set's supercells.

        For a user's own finite-temperature data of one compound, where there is no other
        compound to validate on: the held-out part keeps its random-displacement dataset,
        so :mod:`tdphonon.evaluation` compares force constants fitted to the model's and to
        the DFT forces on the same held-out supercells.

        Parameters
        ----------
        fraction : float
            Share of the supercells held out, in (0, 1); at least one supercell each side.
        seed : int
            Seed of the choice.

        Returns
        -------
        (ForceSet, ForceSet)
            Training part (no harmonic dataset) and held-out part, named ``<name>`` and
            ``<name>:held-out``.

        Raises
        ------
        ForceSetError
            Not a random-displacement set, or too few supercells to split.
        """
        if not self.is_random:
            raise ForceSetError(
                f"force set {self.name!r}: only a random-displacement set splits by supercell"
            )
        n = len(self)
        n_held = min(n - 1, max(1, round(fraction * n)))
        if n < 2 or not 0 < fraction < 1:
            raise ForceSetError(
                f"force set {self.name!r}: cannot hold out {fraction} of {n} supercells"
            )
        order = np.random.default_rng([seed, n]).permutation(n)
        held, kept = sorted(order[:n_held].tolist()), sorted(order[n_held:].tolist())

        def part(indices: list[int], name: str, harmonic: bool) -> ForceSet:
            displacements = [self.displacements(i) for i in indices]
            return replace(
                self,
                name=name,
                supercells=[self.supercells[i] for i in indices],
                forces=[self.forces[i] for i in indices],
                energies=[self.energies[i] for i in indices],
                stresses=[self.stresses[i] for i in indices],
                dataset={"displacements": np.array(displacements)} if harmonic else {},
                harmonic_indices=list(range(len(indices))) if harmonic else [],
                metadata={  # not the parent's cached results (DFT frequencies, fitter)
                    **{k: v for k, v in self.metadata.items() if k != "_cache"},
                    "split": {"of": n, "indices": indices, "seed": seed},
                },
            )

        return part(kept, self.name, False), part(held, f"{self.name}:held-out", True)

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
            # only where present: summaries of other sets (and checkpoint fingerprints made
            # from them) stay as they were
            **({"nac": True} if self.nac_params is not None else {}),
            **(
                {"provenance": {k: v for k, v in provenance.items() if k in _SUMMARY_KEYS}}
                if (provenance := self.metadata.get("provenance"))
                else {}
            ),
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
# phonondb (A. Togo's phonon database) archives and folders
# ---------------------------------------------------------------------------------------------

#: Provenance of phonondb data (recorded in ``ForceSet.metadata["provenance"]``).
PHONONDB: dict[str, str] = {
    "database": "phonondb",
    "release": "2018-04-17",
    "functional": "PBEsol",
    "code": "VASP",
    "license": "CC-BY-4.0",
    "citation": (
        'A. Togo, "First-principles phonon calculations with phonopy and phono3py", '
        "J. Phys. Soc. Jpn. 92, 012001 (2023); A. Togo, I. Tanaka, Scr. Mater. 108, 1-5 "
        "(2015); phonondb (A. Togo, Kyoto), release 2018-04-17, CC-BY-4.0"
    ),
}

_PHONONDB_ARCHIVE_SUFFIXES = (".tar.lzma", ".tar.xz")
_PHONONDB_REQUIRED = ("POSCAR-unitcell", "phonopy.conf", "FORCE_SETS")
_PHONONDB_MEMBERS = (*_PHONONDB_REQUIRED, "BORN", "INCAR-force")
_GGA = {"PS": "PBEsol", "PE": "PBE", "91": "PW91", "AM": "AM05", "RP": "RPBE"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def is_phonondb_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding an unpacked phonondb compound (``POSCAR-unitcell``,
    ``phonopy.conf`` and ``FORCE_SETS``)."""
    path = Path(path)
    return path.is_dir() and all((path / name).is_file() for name in _PHONONDB_REQUIRED)


def _is_phonondb_archive(path: Path) -> bool:
    return path.name.lower().endswith(_PHONONDB_ARCHIVE_SUFFIXES)


def _phonondb_archive_files(path: Path) -> tuple[dict[str, str], str]:
    """The members phonondb needs, as text, from an archive read in memory; and the name of
    its (single) top folder."""
    files: dict[str, str] = {}
    folders: set[str] = set()
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:  # streams: one pass, nothing written to disk
                parts = member.name.strip("/").split("/")
                folders.add(parts[0] if len(parts) > 1 else "")
                if not member.isfile() or parts[-1] not in _PHONONDB_MEMBERS:
                    continue
                if parts[-1] in files:
                    raise ForceSetError(
                        f"{path}: more than one {parts[-1]} (one compound per archive)"
                    )
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file
                files[parts[-1]] = handle.read().decode("utf-8", errors="replace")
    except ForceSetError:
        raise
    except Exception as err:  # tarfile.ReadError, lzma.LZMAError, EOFError, OSError, ...
        raise ForceSetError(
            f"{path}: broken phonondb archive ({type(err).__name__}: {err})"
        ) from None
    folders.discard("")
    return files, (sorted(folders)[0] if len(folders) == 1 else "")


def _parse_phonopy_conf(text: str, where: Path) -> dict[str, str]:
    tags: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ForceSetError(f"{where}: unparsable phonopy.conf line {line!r}")
        key, value = line.split("=", 1)
        tags[key.strip().upper()] = value.strip()
    return tags


def _matrix(value: str, tag: str, where: Path, *, integer: bool) -> np.ndarray:
    from fractions import Fraction

    try:
        numbers = [Fraction(x) for x in value.split()]
    except (ValueError, ZeroDivisionError):
        raise ForceSetError(f"{where}: phonopy.conf {tag} = {value!r} is not numbers") from None
    if len(numbers) == 3:
        matrix = np.diag([float(x) for x in numbers])
    elif len(numbers) == 9:
        matrix = np.reshape([float(x) for x in numbers], (3, 3))
    else:
        raise ForceSetError(
            f"{where}: phonopy.conf {tag} has {len(numbers)} numbers (3 or 9 expected)"
        )
    if integer:
        if not np.allclose(matrix, np.rint(matrix)):
            raise ForceSetError(f"{where}: phonopy.conf {tag} is not integer")
        matrix = np.rint(matrix).astype(int)
    if abs(np.linalg.det(matrix)) < 1e-8:
        raise ForceSetError(f"{where}: phonopy.conf {tag} is singular")
    return matrix


def _index_formula(symbols: Sequence[str]) -> str:
    """Reduced formula, elements in alphabetical order (phonondb's ``index.csv``: ClNa)."""
    from collections import Counter
    from functools import reduce
    from math import gcd

    counts = Counter(symbols)
    divisor = reduce(gcd, counts.values())
    return "".join(
        f"{element}{n // divisor if n // divisor > 1 else ''}"
        for element, n in sorted(counts.items())
    )


def _phonondb_name(where: Path, folder: str, formula: str) -> tuple[str, str | None]:
    """``mp-<id>-<formula>`` (and the release date, when the folder name has it)."""
    release = None
    match = re.match(r"^mp-(\d+)(?:-(\d{4})(\d{2})(\d{2}))?$", folder)
    if match:
        mp_id = f"mp-{match.group(1)}"
        if match.group(2):
            release = f"{match.group(2)}-{match.group(3)}-{match.group(4)}"
    elif archive := re.match(r"^materials-id-(\d+)", where.name):
        mp_id = f"mp-{archive.group(1)}"
    else:
        return where.name.split(".")[0] if where.is_file() else where.name, release
    return f"{mp_id}-{formula}", release


def _phonondb_force_set(
    files: dict[str, str], where: Path, folder: str, name: str | None
) -> ForceSet:
    from phonopy import Phonopy
    from phonopy.file_IO import parse_BORN_from_strings, parse_FORCE_SETS_from_strings
    from phonopy.interface.vasp import read_vasp_from_strings

    missing = [m for m in _PHONONDB_REQUIRED if m not in files]
    if missing:
        raise ForceSetError(f"{where}: no {', '.join(missing)} (not a phonondb compound)")
    tags = _parse_phonopy_conf(files["phonopy.conf"], where)
    if "DIM" not in tags:
        raise ForceSetError(f"{where}: phonopy.conf has no DIM")
    dim = _matrix(tags["DIM"], "DIM", where, integer=True)
    # no PRIMITIVE_AXIS: the unit cell is the primitive cell (phonopy.conf's meaning; phonopy
    # 4 would take None as "auto")
    pmat: Any = np.eye(3)
    if "PRIMITIVE_AXIS" in tags:
        value = tags["PRIMITIVE_AXIS"]
        pmat = (
            "auto"
            if value.lower() == "auto"
            else _matrix(value, "PRIMITIVE_AXIS", where, integer=False)
        )
    step = "POSCAR-unitcell"
    try:
        unitcell = read_vasp_from_strings(files["POSCAR-unitcell"])
        step = "the cells of phonopy.conf"
        phonon = Phonopy(unitcell, supercell_matrix=dim, primitive_matrix=pmat, log_level=0)
        step = "FORCE_SETS"
        dataset = parse_FORCE_SETS_from_strings(files["FORCE_SETS"], natom=len(phonon.supercell))
        nac_params = None
        if "BORN" in files:
            step = "BORN"
            nac_params = parse_BORN_from_strings(files["BORN"], phonon.primitive)
            if nac_params.get("factor") is None:  # as phonopy.load does for VASP
                from phonopy.physical_units import get_calculator_physical_units

                nac_params["factor"] = get_calculator_physical_units("vasp").nac_factor
    except ForceSetError:
        raise
    except Exception as err:
        raise ForceSetError(f"{where}: cannot read {step}: {type(err).__name__}: {err}") from None
    ase_unitcell = to_ase_atoms(phonon.unitcell)
    formula = _index_formula(ase_unitcell.get_chemical_symbols())
    default_name, release = _phonondb_name(where, folder, formula)
    functional = PHONONDB["functional"]
    for line in files.get("INCAR-force", "").splitlines():
        key, _, value = line.split("!")[0].split("#")[0].partition("=")
        if key.strip().upper() == "GGA" and value.strip():
            functional = _GGA.get(value.strip().upper()[:2], value.strip())
    force_set = _sets_from_phonopy_dataset(
        dataset,
        to_ase_atoms(phonon.supercell),
        name=name or default_name,
        unitcell=ase_unitcell,
        supercell_matrix=phonon.supercell_matrix,
        primitive_matrix=phonon.primitive_matrix,
        source=str(where),
    )
    force_set.nac_params = nac_params
    force_set.metadata["provenance"] = {
        **PHONONDB,
        "release": release or PHONONDB["release"],
        "functional": functional,
        "mp_id": default_name.rsplit("-", 1)[0] if default_name.startswith("mp-") else None,
        "archive": where.name,
    }
    return force_set


def read_phonondb(path: str | os.PathLike, name: str | None = None) -> ForceSet:
    """Read one phonondb compound: a ``.tar.lzma`` archive (in memory) or its unpacked folder.

    The unit cell (``POSCAR-unitcell``), supercell and primitive matrices (``DIM``,
    ``PRIMITIVE_AXIS`` of ``phonopy.conf``; without ``PRIMITIVE_AXIS`` the unit cell is the
    primitive cell), the finite displacements with DFT forces (``FORCE_SETS``, type 1) and,
    where present, the Born charges and dielectric tensor (``BORN``, symmetrised by phonopy
    on the primitive cell, as :func:`phonopy.load` does) are read with phonopy's own parsers;
    the same files give the same :class:`ForceSet` as
    ``phonopy.load(unitcell_filename=..., supercell_matrix=DIM, primitive_matrix=PRIMITIVE_AXIS,
    force_sets_filename=..., born_filename=...)``.

    Parameters
    ----------
    path : str or os.PathLike
        ``materials-id-<id>-<formula>-<spg>-<num>.tar.lzma`` or the folder it unpacks to.
    name : str, optional
        Compound name; default ``mp-<id>-<formula>`` (reduced formula, elements in
        alphabetical order, as in phonondb's ``index.csv``: ``mp-22862-ClNa``).

    Returns
    -------
    ForceSet
        With :attr:`ForceSet.nac_params` from ``BORN`` (None without it) and
        ``metadata["provenance"]`` (database, release, functional, license, citation,
        ``mp_id``, archive). No energies or stresses: phonondb has forces only.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ForceSetError
        A broken archive (truncated, not an archive), a missing ``FORCE_SETS``,
        ``POSCAR-unitcell`` or ``phonopy.conf``, an unparsable file: one line naming
        ``path``.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"phonondb archive or folder not found: {path}")
    try:
        if path.is_dir():
            files = {
                m: (path / m).read_text(errors="replace")
                for m in _PHONONDB_MEMBERS
                if (path / m).is_file()
            }
            folder = path.resolve().name
        else:
            files, folder = _phonondb_archive_files(path)
        return _phonondb_force_set(files, path, folder, name)
    except ForceSetError as err:
        raise ForceSetError(_one_line(str(err))) from None
    except OSError as err:
        raise ForceSetError(_one_line(f"{path}: {type(err).__name__}: {err}")) from None


# ---------------------------------------------------------------------------------------------
# files and folders
# ---------------------------------------------------------------------------------------------

_XYZ_SUFFIXES = (".xyz", ".extxyz")

logger = logging.getLogger(__name__)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if path.is_dir():
        return "phonondb" if is_phonondb_folder(path) else None
    if _is_phonondb_archive(path):
        return "phonondb"
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


def _walk(folder: Path) -> list[Path]:
    """Force-set files and phonondb folders under ``folder`` (not inside a phonondb folder)."""
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        if is_phonondb_folder(root_path):
            found.append(root_path)
            dirs.clear()
            continue
        found.extend(root_path / f for f in files if _kind(root_path / f))
    return sorted(found)


def find_force_set_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Force-set files among ``paths`` (files, or folders searched recursively), sorted.

    phonondb compounds count as files: ``*.tar.lzma`` archives and unpacked folders
    (:func:`is_phonondb_folder`). Only names are looked at: nothing is opened.

    Raises
    ------
    FileNotFoundError
        A path does not exist.
    ForceSetError
        A given file is not a recognised force-set file, or nothing was found.
    """
    paths = list(paths)
    found: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"force-set path not found: {path}")
        if path.is_dir():
            found.extend(_walk(path))
        elif _kind(path) is None:
            raise ForceSetError(
                f"{path}: not a recognised force-set file (phonopy_params*.yaml[.xz], "
                "phonopy_disp.yaml, phono3py*.yaml[.xz], *.xyz/*.extxyz, phonondb "
                "*.tar.lzma archives or their unpacked folders)"
            )
        else:
            found.append(path)
    if not found:
        raise ForceSetError(f"no force-set files found in {', '.join(map(str, paths))}")
    return list(dict.fromkeys(found))


class ForceSets(list):
    """A list of :class:`ForceSet` with the inputs that were skipped as unreadable.

    Attributes
    ----------
    skipped : list of (str, str)
        ``(path, one-line reason)`` of each broken phonondb archive or folder skipped.
    """

    def __init__(self, items: Iterable[ForceSet] = (), skipped: Iterable[Any] = ()) -> None:
        super().__init__(items)
        self.skipped: list[tuple[str, str]] = list(skipped)


def iter_force_sets(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    fc2_only: bool = False,
    skipped: list[tuple[str, str]] | None = None,
) -> Iterator[ForceSet]:
    """Read force sets one at a time (for thousands of phonondb archives in bounded memory).

    The inputs are listed first (:func:`find_force_set_files`: missing paths and unknown
    files fail at once), then read lazily, in sorted order. A phonondb archive or folder
    that cannot be read is skipped with a one-line warning naming it (logged, and appended
    to ``skipped`` when a list is given); any other unreadable file raises.

    Parameters
    ----------
    paths : path or iterable of paths
    fc2_only : bool, default False
        From phono3py files with a separate fc2 dataset, keep only the fc2 set.
    skipped : list, optional
        Receives ``(path, reason)`` of each skipped phonondb input.

    Yields
    ------
    ForceSet
        Names made unique (``name``, ``name-2``, ...).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    seen: dict[str, int] = {}
    for path in find_force_set_files(paths):
        kind = _kind(path)
        if kind == "phonondb":
            try:
                group = [read_phonondb(path)]
            except ForceSetError as err:
                logger.warning("skipped unreadable phonondb input: %s", err)
                if skipped is not None:
                    skipped.append((str(path), str(err)))
                continue
        elif kind == "phonopy":
            group = [read_phonopy(path)]
        elif kind == "phono3py":
            group = read_phono3py(path)
            if fc2_only and len(group) > 1:
                group = [s for s in group if s.name.endswith("-fc2")]
        else:
            group = [read_extxyz(path)]
        for s in group:
            if s.name in seen:
                seen[s.name] += 1
                s.name = f"{s.name}-{seen[s.name]}"
            else:
                seen[s.name] = 1
            yield s


def read_force_sets(
    paths: str | os.PathLike | Iterable[str | os.PathLike], *, fc2_only: bool = False
) -> ForceSets:
    """Read all force sets in files or folders.

    Parameters
    ----------
    paths : path or iterable of paths
        Files (phonopy, phono3py, extXYZ, phonondb archives; see the module docstring) or
        folders (phonondb compound folders, or folders searched recursively).
    fc2_only : bool, default False
        From phono3py files with a separate fc2 dataset, keep only the fc2 set.

    Returns
    -------
    ForceSets
        A list of ForceSet, names made unique (``name``, ``name-2``, ...); its ``skipped``
        lists the broken phonondb inputs left out (each logged as a warning, and a summary
        at the end).

    Raises
    ------
    ForceSetError
        Nothing could be read (a single broken archive: its own one-line error).
    """
    skipped: list[tuple[str, str]] = []
    sets = ForceSets(iter_force_sets(paths, fc2_only=fc2_only, skipped=skipped), skipped)
    if skipped:
        if not sets:
            if len(skipped) == 1:
                raise ForceSetError(skipped[0][1])
            raise ForceSetError(
                f"none of the {len(skipped)} phonondb inputs could be read (first: {skipped[0][1]})"
            )
        names = ", ".join(Path(p).name for p, _ in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        logger.warning(
            "read %d force sets; skipped %d unreadable phonondb input(s): %s%s",
            len(sets),
            len(skipped),
            names,
            more,
        )
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
