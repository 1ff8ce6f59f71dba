"""The calculator interface of tdphonon: what every potential provides, and its errors.

* :class:`ForceEvaluator`: the protocol the science core (:mod:`tdphonon.sscha`,
  :mod:`tdphonon.harmonic`) needs, a ``compute(structures, progress)`` method.
* :class:`ForceCalculator`: the base class of tdphonon's calculators (element check,
  batching, progress bar, counting, NaN/inf check around one abstract batch evaluation).
* The errors a potential raises (:class:`UnsupportedElementError`, :class:`ModelLoadError`,
  :class:`NonFiniteForcesError`) and :class:`LegacyConventionWarning`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from numpy.typing import NDArray

__all__ = [
    "ForceCalculator",
    "ForceEvaluator",
    "LegacyConventionWarning",
    "ModelLoadError",
    "NonFiniteForcesError",
    "UnsupportedElementError",
]


class ForceEvaluator(Protocol):
    """What the SSCHA and the harmonic phonons need from a calculator.

    Every :class:`ForceCalculator` is one; so is any object with this method.
    """

    def compute(
        self, structures: Sequence[Atoms], progress: bool = False
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Return energies (n,) in eV and forces (n, N, 3) in eV/Å."""


class UnsupportedElementError(ValueError):
    """A structure contains an element the potential was not trained for.

    Parameters
    ----------
    elements : Iterable[str]
        The unsupported element symbols.
    model : str
        Name of the potential.
    """

    def __init__(self, elements: Iterable[str], model: str) -> None:
        self.elements = tuple(sorted(set(elements)))
        self.model = model
        super().__init__(
            f"element(s) {', '.join(self.elements)} not supported by the potential {model!r}"
        )


class ModelLoadError(RuntimeError):
    """A potential could not be loaded (folder missing or incomplete, hub unreachable, ...)."""


class NonFiniteForcesError(RuntimeError):
    """The potential returned NaN or infinite energies or forces."""


class LegacyConventionWarning(UserWarning):
    """The message convention of a matgl model could not be determined and was assumed."""


# ---------------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------------


class ForceCalculator(abc.ABC):
    """Energies and forces of many structures; counts force evaluations.

    Subclasses implement :meth:`_evaluate_batch` (and :meth:`provenance`,
    :meth:`as_ase_calculator`); the public :meth:`compute` adds the element check, batching,
    progress bar, counting and the NaN/inf check.

    Attributes
    ----------
    name : str
        Short name of the potential, e.g. ``"M3GNet-MP-2021.2.8-PES"`` or ``"emt"``.
    n_force_evaluations : int
        Number of structures evaluated through :meth:`compute` / :meth:`compute_ragged` so
        far (starts at 0). Evaluations through :meth:`as_ase_calculator` are not counted.
    batch_size : int
        Maximum number of structures per call of the underlying model.
    max_atoms_per_batch : int or None
        Maximum total number of atoms per call (a batch always holds at least one
        structure); ``None`` for no limit.
    """

    name: str
    n_force_evaluations: int
    batch_size: int
    max_atoms_per_batch: int | None

    def __init__(
        self, name: str, batch_size: int = 1, max_atoms_per_batch: int | None = None
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.batch_size = int(batch_size)
        self.max_atoms_per_batch = max_atoms_per_batch
        self.n_force_evaluations = 0

    def _batches(self, structures: Sequence[Atoms]) -> Iterator[tuple[int, list[Atoms]]]:
        """Yield ``(start index, structures)`` of consecutive batches within the limits."""
        start = 0
        while start < len(structures):
            stop, n_atoms = start, 0
            while stop < len(structures) and stop - start < self.batch_size:
                n_next = len(structures[stop])
                limit = self.max_atoms_per_batch
                if stop > start and limit is not None and n_atoms + n_next > limit:
                    break
                n_atoms += n_next
                stop += 1
            yield start, list(structures[start:stop])
            start = stop

    # -- to implement -------------------------------------------------------------------------

    @property
    def supported_elements(self) -> frozenset[str] | None:
        """Element symbols the potential supports, or ``None`` if unknown (no check)."""
        return None

    @abc.abstractmethod
    def _evaluate_batch(self, structures: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Evaluate one batch; return energies ``(k,)`` and a list of ``(n_i, 3)`` forces."""

    @abc.abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Describe the potential for provenance records.

        Returns
        -------
        dict
            At least ``name``, ``kind`` (``"matgl"`` or ``"ase"``), ``path``, ``version``,
            ``message_convention``, ``device`` and ``batch_size``; JSON-serialisable.
        """

    @abc.abstractmethod
    def as_ase_calculator(self) -> Calculator:
        """Return an ASE calculator for the same potential (energy, forces, stress in eV/Å³).

        Returns
        -------
        ase.calculators.calculator.Calculator
            A calculator for relaxations or MD. Its evaluations are not counted in
            :attr:`n_force_evaluations`.
        """

    # -- public API ---------------------------------------------------------------------------

    def check_elements(self, symbols: Iterable[str]) -> None:
        """Raise if any element is not supported by the potential.

        Parameters
        ----------
        symbols : Iterable[str]
            Chemical symbols, e.g. ``atoms.get_chemical_symbols()``.

        Raises
        ------
        UnsupportedElementError
            Naming the unsupported element(s) and the potential.
        """
        supported = self.supported_elements
        if supported is None:
            return
        missing = set(symbols) - supported
        if missing:
            raise UnsupportedElementError(missing, self.name)

    def compute(
        self, structures: Sequence[Atoms], progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Compute energies and forces of structures with the same number of atoms.

        Parameters
        ----------
        structures : Sequence[ase.Atoms]
            Structures to evaluate, all with the same number of atoms (use
            :meth:`compute_ragged` otherwise). They are not modified.
        progress : bool, default False
            Show a tqdm progress bar.

        Returns
        -------
        energies : numpy.ndarray
            Total energy of each structure in eV, shape ``(n,)``, float64.
        forces : numpy.ndarray
            Forces in eV/Å, shape ``(n, n_atoms, 3)``, float64.

        Raises
        ------
        UnsupportedElementError
            Before any work, if an element is not supported.
        ValueError
            If the structures differ in size.
        NonFiniteForcesError
            If the potential returns NaN or infinite energies or forces.
        """
        structures = list(structures)
        self.check_elements({s for atoms in structures for s in atoms.get_chemical_symbols()})
        sizes = {len(a) for a in structures}
        if len(sizes) > 1:
            raise ValueError(
                f"structures have different numbers of atoms {sorted(sizes)}; use compute_ragged()"
            )
        energies, forces = self.compute_ragged(structures, progress=progress)
        if not forces:
            return energies, np.zeros((0, 0, 3))
        return energies, np.stack(forces)

    def compute_ragged(
        self, structures: Sequence[Atoms], progress: bool = False
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Compute energies and forces of structures of any sizes.

        Parameters
        ----------
        structures : Sequence[ase.Atoms]
            Structures to evaluate (not modified).
        progress : bool, default False
            Show a tqdm progress bar.

        Returns
        -------
        energies : numpy.ndarray
            Total energies in eV, shape ``(n,)``.
        forces : list of numpy.ndarray
            Forces in eV/Å, one ``(n_atoms_i, 3)`` float64 array per structure.

        Raises
        ------
        UnsupportedElementError
            Before any work, if an element is not supported.
        NonFiniteForcesError
            If the potential returns NaN or infinite energies or forces.
        """
        structures = list(structures)
        for atoms in structures:
            if not isinstance(atoms, Atoms):
                raise TypeError(f"expected ase.Atoms, got {type(atoms).__name__}")
        self.check_elements({s for atoms in structures for s in atoms.get_chemical_symbols()})
        energies: list[np.ndarray] = []
        forces: list[np.ndarray] = []
        with _progress_bar(len(structures), progress, self.name) as bar:
            for start, chunk in self._batches(structures):
                e, f = self._evaluate_batch(chunk)
                self.n_force_evaluations += len(chunk)
                e = np.asarray(e, dtype=np.float64).reshape(-1)
                f = [np.asarray(fi, dtype=np.float64).reshape(-1, 3) for fi in f]
                if len(e) != len(chunk) or len(f) != len(chunk):
                    raise RuntimeError(
                        f"{self.name}: got {len(e)} energies / {len(f)} force arrays "
                        f"for {len(chunk)} structures"
                    )
                bad = [
                    start + i
                    for i in range(len(chunk))
                    if not (np.isfinite(e[i]) and np.all(np.isfinite(f[i])))
                ]
                if bad:
                    raise NonFiniteForcesError(
                        f"potential {self.name!r} returned NaN/inf energies or forces for "
                        f"structure(s) {bad[:10]}{' ...' if len(bad) > 10 else ''}"
                    )
                energies.append(e)
                forces.extend(f)
                bar.update(len(chunk))
        return (np.concatenate(energies) if energies else np.zeros(0)), forces

    def reset_counter(self) -> None:
        """Set :attr:`n_force_evaluations` back to 0."""
        self.n_force_evaluations = 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, batch_size={self.batch_size}, "
            f"n_force_evaluations={self.n_force_evaluations})"
        )


class _NullBar:
    def update(self, n: int) -> None:
        pass


@contextmanager
def _progress_bar(total: int, enabled: bool, desc: str) -> Iterator[Any]:
    if not enabled:
        yield _NullBar()
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="struct") as bar:
        yield bar
