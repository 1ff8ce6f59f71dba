"""Instrumented runners for the SSCHA competitors used in the tdphonon benchmarks.

Two established self-consistent harmonic codes are wrapped behind one interface,
so that the benchmark can compare them with tdphonon on the same ASE potential,
the same supercell and the same statistics:

* phonopy's :class:`phonopy.sscha.core.MLPSSCHA` (:func:`run_mlpsscha`), and
* hiPhive's :func:`hiphive.self_consistent_phonons.self_consistent_harmonic_model`
  (:func:`run_hiphive_scph`).

Both runners evaluate an arbitrary ASE calculator through
:class:`CountingCalculator`, which counts every supercell it evaluates, and return
one :class:`CompetitorIteration` per iteration with the cumulative number of
force evaluations, the cumulative wall time and the full supercell force
constants in the atom order of ``phonon.supercell``.

:func:`commensurate_frequencies` turns force constants into the frequency
accuracy metric: the phonon frequencies at all q-points commensurate with the
supercell.

Notes on the two codes
----------------------
MLPSSCHA
    Run unmodified (its own iterations, sampling and symfc fits). The machine
    learning potential it expects (a pypolymlp ``PhonopyMLP``) is replaced by
    :class:`ASECalculatorMLP`, a ``PhonopyMLP`` whose ``evaluate`` method, the
    only one ``Phonopy.evaluate_mlp`` calls, uses an ASE calculator instead.
    MLPSSCHA and ``Phonopy.generate_displacements(temperature=...)`` always
    sample the *quantum* harmonic distribution: neither exposes the
    ``dist_func`` argument of phonopy's ``RandomDisplacements``. Classical
    statistics are obtained with :class:`ClassicalMLPSSCHA`, a subclass whose
    only change is that, during its sampling step, ``init_random_displacements``
    of its Phonopy instance is called with ``dist_func="classical"``.
hiPhive
    Run unmodified, in a single call for all iterations. Per-iteration wall
    times and evaluation counts are taken from the progress lines it prints
    (captured, timestamped and swallowed). Its phonon rattler draws from NumPy's
    *global* random state, so the global state is seeded with ``seed`` for the
    run and restored afterwards. Its initial model (without
    ``initial_force_constants``) is fitted to structures rattled with a fixed
    0.03 Å standard deviation and hiPhive's own fixed seed (42).

Timing
------
The first hiPhive run in a process also pays one-off costs (numba JIT
compilation, lazy imports) of a few seconds; call :func:`warm_up` before
timed runs. Wall times are those of the whole process: on a loaded machine,
run the benchmark alone, and on few cores set ``OMP_NUM_THREADS=1`` and
``OPENBLAS_NUM_THREADS=1`` (thread oversubscription slowed hiPhive's small
dense linear algebra several-fold on a shared 2-core machine).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TextIO

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.geometry import find_mic
from numpy.typing import NDArray
from phonopy import Phonopy
from phonopy.interface.mlp import PhonopyMLP
from phonopy.physical_units import get_physical_units
from phonopy.sscha.core import MLPSSCHA
from phonopy.structure.atoms import PhonopyAtoms

__all__ = [
    "ASECalculatorMLP",
    "ClassicalMLPSSCHA",
    "CompetitorIteration",
    "CountingCalculator",
    "commensurate_frequencies",
    "compute_harmonic_force_constants",
    "default_hiphive_cutoff",
    "make_mlpsscha",
    "phonopy_atoms_to_ase",
    "run_hiphive_scph",
    "run_mlpsscha",
    "warm_up",
]

Statistics = Literal["quantum", "classical"]


@dataclass
class CompetitorIteration:
    """State of a competitor after one of its iterations.

    Attributes
    ----------
    iteration : int
        Iteration number. 0 is the starting point: the tool's own
        initialisation step when no initial force constants were given, or
        the given initial force constants otherwise (then with no force
        evaluation apart from a reference structure the tool may evaluate).
        1, 2, ... are the self-consistent iterations, each sampling
        ``n_snapshots`` supercells.
    n_force_evaluations : int
        Cumulative number of supercell force evaluations so far, counting
        every structure the calculator evaluated (reference supercell and
        initialisation steps included).
    wall_time : float
        Cumulative wall time in seconds since the runner started setting up
        the tool.
    force_constants : numpy.ndarray
        Full supercell force constants after this iteration in eV/Å²,
        ``shape=(n_atoms, n_atoms, 3, 3)``, in the atom order of the
        ``phonon.supercell`` passed to the runner.
    mean_square_displacement : float
        Mean of ``|u|²`` (Å²) over the atoms of the structures evaluated
        during this iteration, ``u`` being the displacement from the ideal
        supercell (minimum image). NaN if no structure was evaluated.
    """

    iteration: int
    n_force_evaluations: int
    wall_time: float
    force_constants: np.ndarray
    mean_square_displacement: float = float("nan")


# --------------------------------------------------------------------------- #
# Structures and calculators
# --------------------------------------------------------------------------- #


def phonopy_atoms_to_ase(cell: PhonopyAtoms) -> Atoms:
    """Convert a phonopy cell to periodic ASE atoms, keeping order and masses.

    Parameters
    ----------
    cell : PhonopyAtoms
        Phonopy cell (positions in Å).

    Returns
    -------
    ase.Atoms
        Atoms with the same symbols, cell, Cartesian positions and masses.
    """
    return Atoms(
        symbols=list(cell.symbols),
        cell=np.array(cell.cell),
        positions=np.array(cell.positions),
        masses=np.array(cell.masses),
        pbc=True,
    )


class CountingCalculator(Calculator):
    """ASE calculator wrapper that counts the structures it evaluates.

    Each call of :meth:`calculate` evaluates one structure with the wrapped
    calculator (energy and forces together) and counts as one force
    evaluation. ASE only calls it when the structure changed or a property is
    missing, so repeated requests for the same structure are not recounted.

    Parameters
    ----------
    calculator : ase.calculators.calculator.Calculator
        The potential to evaluate.
    reference : ase.Atoms, optional
        Ideal structure. When given, the squared minimum-image displacements
        from it of every evaluated structure are accumulated in
        :attr:`sum_square_displacement` (and the atoms in :attr:`n_atoms_seen`).
    """

    def __init__(self, calculator: Calculator, reference: Atoms | None = None) -> None:
        super().__init__()
        self.calculator = calculator
        self.implemented_properties = list(
            dict.fromkeys(["energy", "forces", *calculator.implemented_properties])
        )
        self.reference = None if reference is None else reference.copy()
        self.n_evaluations = 0
        self.sum_square_displacement = 0.0
        self.n_atoms_seen = 0

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        """Evaluate energy, forces and any further requested property.

        Parameters
        ----------
        atoms : ase.Atoms, optional
            Structure to evaluate.
        properties : sequence of str
            Requested properties.
        system_changes : sequence of str
            What changed since the last calculation.
        """
        super().calculate(atoms, list(properties), list(system_changes))
        assert self.atoms is not None
        requested = list(dict.fromkeys(["energy", "forces", *properties]))
        for name in requested:
            self.calculator.get_property(name, self.atoms)
        self.results = dict(self.calculator.results)
        self.n_evaluations += 1
        if self.reference is not None:
            u = _mic_displacements(self.atoms, self.reference)
            self.sum_square_displacement += float(np.sum(u**2))
            self.n_atoms_seen += len(self.atoms)

    def snapshot(self) -> tuple[int, float, int]:
        """Return ``(n_evaluations, sum_square_displacement, n_atoms_seen)``."""
        return self.n_evaluations, self.sum_square_displacement, self.n_atoms_seen


def _mic_displacements(atoms: Atoms, reference: Atoms) -> NDArray[np.double]:
    """Return minimum-image displacements of ``atoms`` from ``reference``."""
    d = atoms.positions - reference.positions
    return find_mic(d, reference.cell, pbc=True)[0]


def _msd_between(start: tuple[int, float, int], end: tuple[int, float, int]) -> float:
    """Return the mean square displacement of the structures between two snapshots."""
    n_atoms = end[2] - start[2]
    if n_atoms == 0:
        return float("nan")
    return (end[1] - start[1]) / n_atoms


class ASECalculatorMLP(PhonopyMLP):
    """A ``PhonopyMLP`` that evaluates an ASE calculator instead of pypolymlp.

    ``Phonopy.evaluate_mlp`` (used by ``MLPSSCHA``) only calls
    ``mlp.evaluate(supercells_with_displacements)`` and uses the energies and
    forces it returns; this class provides that method.

    Parameters
    ----------
    calculator : ase.calculators.calculator.Calculator
        Potential, typically a :class:`CountingCalculator`.
    """

    def __init__(self, calculator: Calculator) -> None:
        super().__init__(mlp=None)
        self.calculator = calculator

    def evaluate(
        self, supercells_with_displacements: Sequence[PhonopyAtoms | None]
    ) -> tuple[NDArray[np.double], NDArray[np.double], NDArray[np.double]]:
        """Evaluate the supercells with the ASE calculator.

        Parameters
        ----------
        supercells_with_displacements : sequence of PhonopyAtoms
            Supercells to evaluate.

        Returns
        -------
        energies : numpy.ndarray
            Energies in eV, ``shape=(n,)``.
        forces : numpy.ndarray
            Forces in eV/Å, ``shape=(n, n_atoms, 3)``.
        stresses : numpy.ndarray
            Not computed (phonopy discards them): NaN, ``shape=(n, 6)``.
        """
        energies = []
        forces = []
        for cell in supercells_with_displacements:
            if cell is None:
                raise ValueError("Supercells excluded from the dataset are not supported.")
            atoms = phonopy_atoms_to_ase(cell)
            atoms.calc = self.calculator
            energies.append(atoms.get_potential_energy())
            forces.append(atoms.get_forces())
        n = len(energies)
        return (
            np.array(energies, dtype="double"),
            np.array(forces, dtype="double", order="C"),
            np.full((n, 6), np.nan),
        )


def compute_harmonic_force_constants(
    phonon: Phonopy, calculator: Calculator, distance: float = 0.01
) -> NDArray[np.double]:
    """Compute harmonic supercell force constants by finite displacements.

    Uses phonopy's systematic displacements and its traditional fit, so that
    both competitors (and tdphonon) can start from the same harmonic force
    constants. ``phonon`` itself is left untouched.

    Parameters
    ----------
    phonon : phonopy.Phonopy
        Defines unit cell, supercell and primitive cell.
    calculator : ase.calculators.calculator.Calculator
        Potential.
    distance : float, optional
        Displacement distance in Å. Default is 0.01.

    Returns
    -------
    numpy.ndarray
        Full force constants in eV/Å², ``shape=(n_atoms, n_atoms, 3, 3)``.
    """
    ph = phonon.replicate()
    ph.generate_displacements(distance=distance)
    _, forces, _ = ASECalculatorMLP(calculator).evaluate(ph.supercells_with_displacements)
    ph.forces = forces
    ph.produce_force_constants(calculate_full_force_constants=True, show_drift=False)
    fc = ph.force_constants
    assert fc is not None
    return np.array(fc)


def commensurate_frequencies(phonon: Phonopy, force_constants: np.ndarray) -> NDArray[np.double]:
    """Return the frequencies at all q-points commensurate with the supercell.

    These are the eigenfrequencies of the supercell dynamical matrix at Gamma
    (which folds every commensurate q-point onto Gamma), without the three
    acoustic translations.

    Parameters
    ----------
    phonon : phonopy.Phonopy
        Provides the supercell (masses, atom order of ``force_constants``).
    force_constants : numpy.ndarray
        Full supercell force constants in eV/Å²,
        ``shape=(n_atoms, n_atoms, 3, 3)``.

    Returns
    -------
    numpy.ndarray
        Sorted frequencies in THz, ``shape=(3 * n_atoms - 3,)``. Imaginary
        frequencies are returned as negative numbers.
    """
    fc = np.asarray(force_constants, dtype=float)
    n_atoms = len(phonon.supercell)
    if fc.shape != (n_atoms, n_atoms, 3, 3):
        raise ValueError(
            f"Full supercell force constants of shape {(n_atoms, n_atoms, 3, 3)} are "
            f"required, got {fc.shape}."
        )
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(np.asarray(phonon.supercell.masses)), 3)
    dynmat = fc.transpose(0, 2, 1, 3).reshape(3 * n_atoms, 3 * n_atoms)
    dynmat = dynmat * np.outer(inv_sqrt_m, inv_sqrt_m)
    eigvals = np.linalg.eigvalsh((dynmat + dynmat.T) / 2)
    keep = np.sort(np.argsort(np.abs(eigvals))[3:])
    w2 = eigvals[keep]
    factor = get_physical_units().DefaultToTHz
    return np.sort(np.sign(w2) * np.sqrt(np.abs(w2)) * factor)


def _check_statistics(statistics: str) -> None:
    if statistics not in ("quantum", "classical"):
        raise ValueError(f"statistics must be 'quantum' or 'classical', got {statistics!r}.")


def _check_fc(phonon: Phonopy, fc: np.ndarray | None) -> NDArray[np.double] | None:
    if fc is None:
        return None
    fc = np.array(fc, dtype="double", order="C")
    n = len(phonon.supercell)
    if fc.shape != (n, n, 3, 3):
        raise ValueError(
            f"initial_force_constants must be full supercell force constants of shape "
            f"{(n, n, 3, 3)}, got {fc.shape}."
        )
    return fc


# --------------------------------------------------------------------------- #
# phonopy MLPSSCHA
# --------------------------------------------------------------------------- #


class ClassicalMLPSSCHA(MLPSSCHA):
    """``MLPSSCHA`` sampling the classical harmonic distribution.

    ``MLPSSCHA.sample_supercells`` calls ``Phonopy.generate_displacements(
    temperature=...)``, which builds phonopy's ``RandomDisplacements`` through
    ``Phonopy.init_random_displacements`` without ``dist_func`` and therefore
    always with quantum statistics. This subclass runs the unchanged
    ``sample_supercells`` while ``init_random_displacements`` of its Phonopy
    instance is bound to ``dist_func="classical"``. Nothing else differs; in
    particular the harmonic free energy that MLPSSCHA reports alongside stays
    the quantum one of phonopy's thermal properties.
    """

    def sample_supercells(self) -> None:
        """Sample supercells from the classical distribution and evaluate them."""
        ph = self._ph
        init = ph.init_random_displacements
        ph.init_random_displacements = partial(init, dist_func="classical")  # type: ignore[method-assign]
        try:
            super().sample_supercells()
        finally:
            del ph.init_random_displacements


def make_mlpsscha(
    phonon: Phonopy,
    calculator: Calculator,
    temperature: float,
    *,
    statistics: Statistics = "quantum",
    n_snapshots: int,
    max_iterations: int,
    seed: int = 0,
    initial_force_constants: np.ndarray | None = None,
    log_level: int = 0,
) -> MLPSSCHA:
    """Build a ``MLPSSCHA`` evaluating an ASE calculator.

    See :func:`run_mlpsscha` for the parameters. The instance evaluates the
    reference supercell on construction. ``phonon`` is not modified.

    Returns
    -------
    MLPSSCHA
        ``MLPSSCHA`` (quantum) or :class:`ClassicalMLPSSCHA` (classical).
    """
    _check_statistics(statistics)
    fc0 = _check_fc(phonon, initial_force_constants)
    ph = phonon.replicate()
    if fc0 is not None:
        ph.force_constants = fc0
    cls = ClassicalMLPSSCHA if statistics == "classical" else MLPSSCHA
    return cls(
        ph,
        ASECalculatorMLP(calculator),
        temperature=temperature,
        number_of_snapshots=n_snapshots,
        max_iterations=max_iterations,
        random_seed=seed,
        log_level=log_level,
    )


def run_mlpsscha(
    phonon: Phonopy,
    calculator: Calculator,
    temperature: float,
    *,
    statistics: Statistics = "quantum",
    n_snapshots: int,
    max_iterations: int,
    seed: int = 0,
    initial_force_constants: np.ndarray | None = None,
    log_level: int = 0,
) -> list[CompetitorIteration]:
    """Run phonopy's ``MLPSSCHA`` on an ASE calculator and record every iteration.

    ``MLPSSCHA`` is used as it is: its initialisation step, its sampling of the
    harmonic canonical ensemble (phonopy ``RandomDisplacements``, per-iteration
    seeds derived from ``seed``), its symfc fits without mixing, and its
    free-energy evaluation in each iteration (mesh 100, part of its cost).

    Force evaluations: 1 for the undisplaced reference supercell (evaluated on
    construction), plus ``n_snapshots`` for the initialisation step with
    random displacements of fixed length 0.01 Å if ``initial_force_constants``
    is None, plus ``n_snapshots`` per iteration.

    Parameters
    ----------
    phonon : phonopy.Phonopy
        Unit cell, supercell matrix and primitive matrix (any consistent
        choice; e.g. the fcc primitive cell with
        ``supercell_matrix = 3 * [[-1, 1, 1], [1, -1, 1], [1, 1, -1]]``, or
        the conventional cell with ``3 * I`` and ``primitive_matrix="auto"``).
        Only these are used (``Phonopy.replicate``); its force constants are
        ignored and it is not modified.
    calculator : ase.calculators.calculator.Calculator
        Potential.
    temperature : float
        Temperature in K.
    statistics : {"quantum", "classical"}, optional
        Harmonic distribution sampled. Classical uses
        :class:`ClassicalMLPSSCHA`. Default is "quantum".
    n_snapshots : int
        Supercells per iteration (and in the initialisation step).
    max_iterations : int
        Number of self-consistent iterations after the starting point.
    seed : int, optional
        ``MLPSSCHA`` random seed. Default is 0.
    initial_force_constants : numpy.ndarray, optional
        Full supercell force constants to start from (skips the
        initialisation step).
    log_level : int, optional
        ``MLPSSCHA`` log level. Default is 0.

    Returns
    -------
    list of CompetitorIteration
        ``max_iterations + 1`` entries, iteration 0 being the starting point.
    """
    t0 = time.perf_counter()
    counter = CountingCalculator(calculator, reference=phonopy_atoms_to_ase(phonon.supercell))
    sscha = make_mlpsscha(
        phonon,
        counter,
        temperature,
        statistics=statistics,
        n_snapshots=n_snapshots,
        max_iterations=max_iterations,
        seed=seed,
        initial_force_constants=initial_force_constants,
        log_level=log_level,
    )
    history: list[CompetitorIteration] = []
    last = (0, 0.0, 0)

    def record(iteration: int) -> None:
        nonlocal last
        wall = time.perf_counter() - t0
        now = counter.snapshot()
        history.append(
            CompetitorIteration(
                iteration=iteration,
                n_force_evaluations=now[0],
                wall_time=wall,
                force_constants=np.array(sscha.force_constants, copy=True),
                mean_square_displacement=_msd_between(last, now),
            )
        )
        last = now

    if sscha.initial_force_constants_provided:
        record(0)
    for iteration in sscha:
        record(iteration)
    return history


# --------------------------------------------------------------------------- #
# hiPhive self-consistent phonons
# --------------------------------------------------------------------------- #


def default_hiphive_cutoff(supercell: Atoms | PhonopyAtoms, fraction: float = 0.99) -> float:
    """Return a second-order cutoff just below half the smallest supercell width.

    hiPhive refuses clusters that appear in two orbits of the supercell, i.e.
    pair cutoffs of half the supercell width or more, so this is the longest
    usable range. Pairs at exactly half the width (e.g. the second
    neighbours of fcc in a 2x2x2 conventional supercell) are left out.

    Parameters
    ----------
    supercell : ase.Atoms or PhonopyAtoms
        Supercell the force constants are wanted for.
    fraction : float, optional
        Fraction of half the smallest width. Default is 0.99.

    Returns
    -------
    float
        Cutoff in Å.
    """
    cell = np.array(supercell.cell, dtype=float)
    widths = 1.0 / np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    return float(fraction * widths.min() / 2)


class _LineRecorder(io.TextIOBase):
    """Text stream that timestamps each complete line written to it."""

    def __init__(self, stamp: Callable[[], Any], echo: TextIO | None = None) -> None:
        super().__init__()
        self._stamp = stamp
        self._echo = echo
        self._buffer = ""
        self.lines: list[tuple[str, Any]] = []

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        if self._echo is not None:
            self._echo.write(s)
        self._buffer += s
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self.lines.append((line, self._stamp()))
        return len(s)


@contextlib.contextmanager
def _quiet_logger(name: str, quiet: bool) -> Iterator[None]:
    """Raise the level of a logger to WARNING for the duration, if ``quiet``."""
    logger = logging.getLogger(name)
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global random state and restore the previous state afterwards."""
    # hiPhive draws from the legacy global state, hence the legacy API here.
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def run_hiphive_scph(
    phonon: Phonopy,
    calculator: Calculator,
    temperature: float,
    *,
    statistics: Statistics = "quantum",
    n_snapshots: int,
    max_iterations: int,
    alpha: float = 0.2,
    cutoffs: list[float] | None = None,
    seed: int = 0,
    initial_force_constants: np.ndarray | None = None,
    log_level: int = 0,
) -> list[CompetitorIteration]:
    """Run hiPhive's self-consistent phonons on an ASE calculator.

    ``self_consistent_harmonic_model`` is called once for all iterations,
    unmodified: each iteration draws ``n_snapshots`` phonon-rattled supercells
    from the current model (``QM_statistics`` set from ``statistics``), fits
    new second-order parameters to their forces by least squares (no
    reference/residual forces are evaluated or subtracted) and mixes them in
    with step ``alpha``.

    The model is a second-order ``ClusterSpace`` on ``phonon.primitive``
    (default cutoff: :func:`default_hiphive_cutoff` of the supercell), mapped
    onto ``phonon.supercell`` as ASE atoms, so the force constants come in
    the atom order of ``phonon.supercell``. They are obtained from the
    parameters exactly as hiPhive does internally (``ForceConstantModel``
    with the parameters set, ``get_fc_array(order=2)``; equal to
    ``ForceConstantPotential(cs, p).get_force_constants(supercell)``), after
    the run, outside the timing.

    Force evaluations: ``n_snapshots`` for hiPhive's initial model (random
    rattling, 0.03 Å standard deviation) if ``initial_force_constants`` is
    None, plus ``n_snapshots`` per iteration.

    Wall time starts before the ``ClusterSpace`` is built. Projecting
    ``initial_force_constants`` onto the cluster space
    (``hiphive.utilities.extract_parameters``, i.e. preparing the input) is
    excluded from it.

    Parameters
    ----------
    phonon : phonopy.Phonopy
        Unit cell, supercell matrix and primitive matrix. Not modified.
    calculator : ase.calculators.calculator.Calculator
        Potential.
    temperature : float
        Temperature in K.
    statistics : {"quantum", "classical"}, optional
        Default is "quantum".
    n_snapshots : int
        Supercells per iteration (and for the initial model).
    max_iterations : int
        Number of self-consistent iterations.
    alpha : float, optional
        Mixing step of hiPhive, in (0, 1]. Default is 0.2.
    cutoffs : list of float, optional
        Second-order cutoff ``[r2]`` in Å, below half the smallest supercell
        width. Default is ``[default_hiphive_cutoff(phonon.supercell)]``.
    seed : int, optional
        Seed of NumPy's global random state for the duration of the run
        (hiPhive's phonon rattler uses it; the previous global state is
        restored afterwards). Default is 0.
    initial_force_constants : numpy.ndarray, optional
        Full supercell force constants to start from, projected onto the
        cluster space (exact when the force constants vanish beyond the
        cutoff).
    log_level : int, optional
        With a positive value, hiPhive's progress output is echoed to stdout
        and its logger is left as it is; otherwise both are silenced.
        Default is 0.

    Returns
    -------
    list of CompetitorIteration
        ``max_iterations + 1`` entries, iteration 0 being the starting point.
    """
    from hiphive import ClusterSpace
    from hiphive.force_constant_model import ForceConstantModel
    from hiphive.force_constants import ForceConstants
    from hiphive.self_consistent_phonons import self_consistent_harmonic_model
    from hiphive.utilities import extract_parameters

    _check_statistics(statistics)
    fc0 = _check_fc(phonon, initial_force_constants)

    t0 = time.perf_counter()
    supercell = phonopy_atoms_to_ase(phonon.supercell)
    primitive = phonopy_atoms_to_ase(phonon.primitive)
    if cutoffs is None:
        cutoffs = [default_hiphive_cutoff(supercell)]
    if len(cutoffs) != 1:
        raise ValueError("Only a second-order cutoff [r2] can be given.")
    counter = CountingCalculator(calculator, reference=supercell)
    echo = sys.stdout if log_level > 0 else None
    recorder = _LineRecorder(lambda: (time.perf_counter(), counter.snapshot()), echo=echo)

    with contextlib.redirect_stdout(recorder), _quiet_logger("hiphive", log_level <= 0):
        cs = ClusterSpace(primitive, list(cutoffs))
        excluded = 0.0
        parameters_start = None
        if fc0 is not None:
            t_excl = time.perf_counter()
            fcs = ForceConstants.from_arrays(supercell, fc2_array=fc0)
            parameters_start = extract_parameters(fcs, cs, sanity_check=False)
            excluded = time.perf_counter() - t_excl
        t_start = (time.perf_counter(), counter.snapshot())
        with _seeded_global_numpy(seed):
            trajectory = self_consistent_harmonic_model(
                supercell,
                counter,
                cs,
                temperature,
                alpha,
                max_iterations,
                n_snapshots,
                QM_statistics=(statistics == "quantum"),
                parameters_start=parameters_start,
            )
        t_end = (time.perf_counter(), counter.snapshot())

    # Iteration i (1-based) ends with its summary line "|x_new| = ...";
    # the initial model ends where "Iteration 0" starts.
    ends = [stamp for line, stamp in recorder.lines if "|x_new|" in line]
    starts = [stamp for line, stamp in recorder.lines if line.startswith("Iteration ")]
    if len(ends) != max_iterations or len(trajectory) != max_iterations + 1:
        raise RuntimeError(
            "Unexpected progress output of hiphive's self_consistent_harmonic_model; "
            "cannot attribute wall times to iterations."
        )
    if fc0 is not None:
        stamps = [t_start, *ends]
    else:
        stamps = [starts[0] if starts else t_end, *ends]

    fcm = ForceConstantModel(supercell, cs)
    history: list[CompetitorIteration] = []
    last = (0, 0.0, 0)
    for iteration, (parameters, (t, snap)) in enumerate(zip(trajectory, stamps, strict=True)):
        fcm.parameters = parameters
        fc = fcm.get_force_constants().get_fc_array(order=2)
        history.append(
            CompetitorIteration(
                iteration=iteration,
                n_force_evaluations=snap[0],
                wall_time=t - t0 - excluded,
                force_constants=np.array(fc, dtype="double", order="C"),
                mean_square_displacement=_msd_between(last, snap),
            )
        )
        last = snap
    return history


def warm_up(
    phonon: Phonopy, calculator: Calculator, force_constants: np.ndarray | None = None
) -> None:
    """Pay the one-off costs of both tools before timed runs.

    Runs one iteration with two snapshots of each runner, which triggers
    hiPhive's numba compilation and the lazy imports of both tools.

    Parameters
    ----------
    phonon : phonopy.Phonopy
        System as passed to the runners.
    calculator : ase.calculators.calculator.Calculator
        Potential.
    force_constants : numpy.ndarray, optional
        Starting force constants; harmonic ones are computed if None.
    """
    if force_constants is None:
        force_constants = compute_harmonic_force_constants(phonon, calculator)
    kwargs: dict[str, Any] = {
        "n_snapshots": 2,
        "max_iterations": 1,
        "initial_force_constants": force_constants,
    }
    run_mlpsscha(phonon, calculator, 300.0, **kwargs)
    run_hiphive_scph(phonon, calculator, 300.0, **kwargs)
