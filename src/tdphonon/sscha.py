"""Stochastic self-consistent harmonic approximation (SSCHA).

One temperature, one supercell, any force calculator. Each iteration

1. builds the thermal distribution of the current force constants
   (:class:`~tdphonon.sampling.ThermalDistribution`);
2. reweights the snapshots already computed to that distribution (importance
   sampling) and keeps the populations whose Kong-Liu effective sample size is
   still large enough; only when the kept snapshots carry too little information
   are fresh antithetic snapshots drawn and their forces evaluated;
3. fits effective force constants to all kept snapshots with their weights
   (:class:`~tdphonon.fitting.ForceConstantFitter`) and estimates the statistical
   error of the frequencies by bootstrap over snapshot pairs;
4. is converged when every reported frequency of the fit differs from that of the
   current force constants (self-consistency) by less than a quarter of the
   tolerance and its statistical (bootstrap standard) error is below the tolerance.
   Otherwise the target sample size grows as (largest error / target error)^2 -- the
   target error being 90 % of the tolerance near self-consistency and a fraction of
   the frequency change far from it -- and the force constants are mixed linearly for
   the next iteration.

The reported frequencies are those of all q-points commensurate with the supercell
(the supercell dynamical matrix at Gamma without rigid translations) and those at any
further q-points given (e.g. the labelled points of a band path): the tolerance bounds
the error of each mode there, not an average over modes. Snapshots of population k
use the same random stream at every temperature (common random numbers), so that the
temperature dependence of a frequency carries much less noise than each value. The SSCHA free
energy per atom is :math:`F = E_0/N + F_h[\\Phi]/n_p + \\langle V - E_0 - u^T\\Phi u/2
\\rangle_\\Phi / N`, with the harmonic part on a q-point mesh (phonopy) and the
average over reweighted snapshots, with its standard error.

Units: eV, Å, amu, THz, K (phonopy units).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from phonopy import Phonopy
from phonopy.harmonic.dynamical_matrix import get_dynamical_matrix
from phonopy.physical_units import get_physical_units

from tdphonon.anharmonicity import AnharmonicityScore, anharmonicity_score
from tdphonon.fitting import ForceConstantFitter, harmonic_forces
from tdphonon.phonons import harmonic_free_energy
from tdphonon.potentials import ForceEvaluator
from tdphonon.sampling import (
    Statistics,
    ThermalDistribution,
    mode_frequencies,
    translation_complement,
)
from tdphonon.structures import supercell_atoms, wyckoff_labels


@dataclass
class SSCHASettings:
    """Numerical settings of an SSCHA run.

    Parameters
    ----------
    statistics : {"quantum", "classical"}
        Bose-Einstein statistics with zero-point motion, or classical.
    frequency_tolerance : float
        Target accuracy (THz) of every reported renormalised frequency (each mode at
        each commensurate q-point and each requested q-point): its bootstrap standard
        error must fall below it and its self-consistency residual below a quarter of it.
    initial_snapshots : int
        Snapshots (even: antithetic pairs) of the first population.
    max_snapshots : int
        Upper bound of the sample size the adaptive scheme may ask for.
    max_iterations : int
        Iterations (reweighting-only iterations included) before giving up.
    max_force_evaluations : int
        Upper bound on force evaluations spent at this temperature.
    mixing : float
        Fraction of the fitted force constants mixed into the current ones at first;
        halved whenever the self-consistency residual grows (an overshooting soft mode,
        see :meth:`SSCHA._mixing`), down to ``MIN_MIXING_FRACTION`` of this.
    min_ess_fraction : float
        A population is reused while its Kong-Liu effective sample size divided by
        its size stays above this; new snapshots are drawn when the kept
        effective sample size falls below this fraction of the target size.
    n_bootstrap : int
        Bootstrap resamples for the statistical error.
    min_frequency : float
        Modes are sampled with at least this frequency (THz); imaginary modes with
        their absolute frequency.
    max_displacement : float
        No mode gives any atom a root-mean-square displacement above this (Å): keeps
        modes that cross zero during the iterations from throwing atoms apart. The
        iteration records count the modes at the cap (``n_capped_modes``).
    free_energy_mesh : float
        Length-based q-point mesh density for the harmonic free energy (phonopy).
    seed : int
        Seed; results are deterministic for a given seed.
    """

    statistics: Statistics = "quantum"
    frequency_tolerance: float = 0.05
    initial_snapshots: int = 16
    max_snapshots: int = 1024
    max_iterations: int = 60
    max_force_evaluations: int = 20000
    mixing: float = 0.5
    min_ess_fraction: float = 0.5
    n_bootstrap: int = 16
    min_frequency: float = 0.3
    max_displacement: float = 0.3
    free_energy_mesh: float = 50.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.statistics not in ("quantum", "classical"):
            raise ValueError(
                f"statistics must be 'quantum' or 'classical', not {self.statistics!r}"
            )
        if self.initial_snapshots < 2 or self.initial_snapshots % 2:
            raise ValueError("initial_snapshots must be an even number >= 2 (antithetic pairs)")
        if not 0 < self.mixing <= 1:
            raise ValueError("mixing must be in (0, 1]")
        if not 0 < self.min_ess_fraction < 1:
            raise ValueError("min_ess_fraction must be in (0, 1)")
        if self.frequency_tolerance <= 0:
            raise ValueError("frequency_tolerance must be positive (THz)")


@dataclass
class Population:
    """Snapshots drawn from one thermal distribution, with their forces and energies.

    Parameters
    ----------
    displacements : ndarray, shape (n, N, 3)
        Å, antithetic pairs (2k, 2k+1).
    forces : ndarray, shape (n, N, 3)
        Forces in eV/Å (raw, reference forces not subtracted).
    energies : ndarray, shape (n,)
        Supercell energies in eV.
    sampling_force_constants : ndarray, shape (N, N, 3, 3)
        Force constants whose distribution generated the snapshots, eV/Å².
    index : int
        Running number of the population at this temperature (its random stream).
    """

    displacements: NDArray[np.float64]
    forces: NDArray[np.float64]
    energies: NDArray[np.float64]
    sampling_force_constants: NDArray[np.float64]
    index: int

    def __len__(self) -> int:
        return len(self.displacements)


def _described(description: str) -> Any:
    """A required dataclass field with a description (``field.metadata["description"]``)."""
    return field(metadata={"description": description})


@dataclass
class IterationRecord:
    """Diagnostics of one SSCHA iteration (frequencies in THz).

    ``frequency_change`` is the RMS and ``max_frequency_change`` the largest change of the
    reported frequencies (fit minus current force constants); ``frequency_error`` is the
    largest bootstrap standard error of a reported frequency (what the tolerance bounds),
    ``rms_frequency_error`` their RMS. Each field's ``metadata["description"]`` says what
    it holds; :class:`tdphonon.schemas.SSCHAIterationDoc` takes its fields from here.
    """

    iteration: int = _described("Iteration number, from 1")
    n_new_snapshots: int = _described("Snapshots drawn (and evaluated) this iteration")
    n_force_evaluations: int = _described("Snapshot force evaluations so far at this T")
    n_active_snapshots: int = _described("Snapshots of the populations in use")
    effective_sample_size: float = _described("Kong-Liu effective sample size")
    frequency_change: float = _described(
        "RMS change of the reported frequencies (fit - current), THz"
    )
    max_frequency_change: float = _described("Largest frequency change, THz")
    frequency_error: float = _described(
        "Largest bootstrap standard error of a reported frequency (commensurate and "
        "labelled q-points), THz: what the tolerance bounds"
    )
    rms_frequency_error: float = _described("RMS of those errors, THz")
    min_frequency: float = _described("Lowest commensurate frequency of the fit, THz")
    n_capped_modes: int = _described(
        "Modes sampled at the displacement cap (max_displacement), see SSCHASettings"
    )
    converged: bool = _described("Convergence criterion met")
    mixing: float | None = field(
        default=None,
        metadata={
            "description": "Fraction of the fit mixed into the force constants after this "
            "iteration (None in records written before the mixing adapted: the setting's)"
        },
    )


@dataclass
class SSCHAState:
    """Everything needed to continue an SSCHA run (and nothing derivable).

    Parameters
    ----------
    force_constants : ndarray, shape (N, N, 3, 3)
        Current force constants, eV/Å².
    populations : list of Population
        Populations still in use.
    n_target_snapshots : int
        Current target sample size.
    n_populations_drawn : int
        Populations drawn so far (next random stream).
    history : list of IterationRecord
        Diagnostics so far.
    fitted_force_constants : ndarray or None
        Last fit (the result when converged).
    frequency_errors : ndarray or None
        Bootstrap standard errors of the last fit's reported frequencies (THz):
        commensurate modes, then the requested q-points (see :meth:`SSCHA.reported_frequencies`).
    """

    force_constants: NDArray[np.float64]
    populations: list[Population] = field(default_factory=list)
    n_target_snapshots: int = 0
    n_populations_drawn: int = 0
    history: list[IterationRecord] = field(default_factory=list)
    fitted_force_constants: NDArray[np.float64] | None = None
    frequency_errors: NDArray[np.float64] | None = None

    @property
    def converged(self) -> bool:
        """Whether the last iteration met the convergence criterion."""
        return bool(self.history) and self.history[-1].converged

    @property
    def n_force_evaluations(self) -> int:
        """Force evaluations spent so far (snapshots only)."""
        return self.history[-1].n_force_evaluations if self.history else 0


@dataclass
class SSCHAResult:
    """Outcome of an SSCHA run at one temperature.

    ``force_constants`` are full supercell force constants (eV/Å²);
    ``frequencies`` and ``frequency_errors`` are at the commensurate q-points (THz);
    ``qpoint_frequencies`` and ``qpoint_frequency_errors`` (``(n_q, 3 n_p)``, THz, ascending
    per q-point) at the requested ``qpoints``; ``free_energy`` and its error are in eV/atom
    (``None`` when the force constants have imaginary modes, in which case
    ``free_energy_note`` says so); ``anharmonicity`` is sigma^A of the final ensemble
    against ``force_constants`` (:meth:`SSCHA.anharmonicity`).
    """

    temperature: float
    settings: SSCHASettings
    force_constants: NDArray[np.float64]
    converged: bool
    message: str
    n_force_evaluations: int
    n_iterations: int
    frequencies: NDArray[np.float64]
    frequency_errors: NDArray[np.float64]
    free_energy: float | None
    free_energy_error: float | None
    free_energy_note: str
    history: list[IterationRecord]
    qpoints: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)))
    qpoint_frequencies: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    qpoint_frequency_errors: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    anharmonicity: AnharmonicityScore | None = None


MAX_SAMPLE_GROWTH = 4.0
"""Largest factor by which the target sample size grows from one iteration to the next."""

MIN_MIXING_FRACTION = 1 / 8
"""The adaptive mixing goes no lower than this fraction of ``SSCHASettings.mixing``."""


def _effective_sample_size(weights: NDArray[np.float64]) -> float:
    """Kong-Liu effective sample size (sum w)^2 / sum w^2."""
    return float(weights.sum() ** 2 / np.sum(weights**2))


class SSCHA:
    """SSCHA iterations of one supercell at one temperature.

    Parameters
    ----------
    phonon : Phonopy
        Unit cell, supercell and primitive matrices of the crystal. Its force
        constants (full) are the starting point unless ``force_constants`` or ``state``
        is given. It is not modified (it may be shared, e.g. cached per process).
    calculator : ForceEvaluator
        Energies and forces of supercells (e.g. :func:`tdphonon.potentials.get_calculator`).
    temperature : float
        Temperature in K.
    settings : SSCHASettings, optional
        Numerical settings.
    reference : tuple of (float, ndarray), optional
        Energy (eV) and forces (N, 3; eV/Å) of the undisplaced supercell; evaluated
        (one force evaluation) when omitted.
    state : SSCHAState, optional
        Continue from this state (e.g. the previous job's), instead of starting
        from ``phonon.force_constants``.
    fitter : ForceConstantFitter, optional
        Reuse a fitter (its symmetry basis) built for the same supercell.
    qpoints : array_like, shape (n_q, 3), optional
        Further q-points (fractional, reciprocal basis of ``phonon.primitive``) whose
        frequencies are reported, e.g. the labelled points of a band path: the tolerance
        bounds their errors too.
    force_constants : ndarray, shape (N, N, 3, 3), optional
        Starting force constants (eV/Å²) instead of ``phonon.force_constants``.
    """

    def __init__(
        self,
        phonon: Phonopy,
        calculator: ForceEvaluator,
        temperature: float,
        settings: SSCHASettings | None = None,
        reference: tuple[float, NDArray[np.float64]] | None = None,
        state: SSCHAState | None = None,
        fitter: ForceConstantFitter | None = None,
        qpoints: NDArray[np.float64] | Sequence[Sequence[float]] | None = None,
        force_constants: NDArray[np.float64] | None = None,
    ) -> None:
        self.phonon = phonon
        self.qpoints = np.zeros((0, 3)) if qpoints is None else np.reshape(qpoints, (-1, 3))
        self.calculator = calculator
        self.temperature = float(temperature)
        self.settings = settings or SSCHASettings()
        if self.settings.statistics == "classical" and self.temperature <= 0:
            raise ValueError("classical SSCHA needs a temperature above 0 K")
        self.masses = np.asarray(phonon.supercell.masses, dtype=float)
        self.n_atoms = len(self.masses)
        self._complement = translation_complement(self.masses)
        self.fitter = fitter or ForceConstantFitter(phonon.supercell)
        self.n_reference_evaluations = 0
        if reference is None:
            energies, forces = calculator.compute(supercell_atoms(phonon))
            reference = (float(energies[0]), forces[0])
            self.n_reference_evaluations = 1
        self.reference_energy, self.reference_forces = reference
        if state is None:
            if force_constants is None:
                force_constants = phonon.force_constants
            if force_constants is None:
                raise ValueError("phonon has no force constants to start the SSCHA from")
            force_constants = np.asarray(force_constants, dtype=float)
            if force_constants.shape != (self.n_atoms, self.n_atoms, 3, 3):
                raise ValueError("starting force constants must be full supercell force constants")
            state = SSCHAState(
                force_constants=force_constants.copy(),
                n_target_snapshots=self.settings.initial_snapshots,
            )
        self.state = state
        self._distributions: dict[int, ThermalDistribution] = {}

    # -- distributions -----------------------------------------------------------------
    def distribution(self, force_constants: NDArray[np.float64]) -> ThermalDistribution:
        """Thermal distribution of ``force_constants`` at this temperature."""
        return ThermalDistribution.from_force_constants(
            force_constants,
            self.masses,
            self.temperature,
            self.settings.statistics,
            self.settings.min_frequency,
            self._complement,
            self.settings.max_displacement,
        )

    def _population_distribution(self, population: Population) -> ThermalDistribution:
        if population.index not in self._distributions:
            self._distributions[population.index] = self.distribution(
                population.sampling_force_constants
            )
        return self._distributions[population.index]

    def frequencies(
        self, force_constants: NDArray[np.float64], eigenvalues_only: bool = False
    ) -> NDArray[np.float64]:
        """Frequencies (THz) at the commensurate q-points, ascending.

        ``eigenvalues_only`` skips the eigenvectors (cheaper; the same values to rounding).
        """
        if eigenvalues_only:
            return mode_frequencies(force_constants, self.masses, self._complement)
        return self.distribution(force_constants).modes.frequencies

    def qpoint_frequencies(self, force_constants: NDArray[np.float64]) -> NDArray[np.float64]:
        """Frequencies (THz, ``(n_q, 3 n_p)``, ascending per q-point) at :attr:`qpoints`.

        Imaginary frequencies are negative. No non-analytical correction: it is a property
        of the Born charges, which the SSCHA does not renormalise.
        """
        if not len(self.qpoints):
            return np.zeros((0, 3 * len(self.phonon.primitive)))
        matrix = get_dynamical_matrix(force_constants, self.phonon.supercell, self.phonon.primitive)
        frequencies = []
        for qpoint in self.qpoints:
            matrix.run(qpoint)
            eigenvalues = np.linalg.eigvalsh(matrix.dynamical_matrix).real
            frequencies.append(np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)))
        return np.asarray(frequencies) * get_physical_units().DefaultToTHz

    def reported_frequencies(
        self, force_constants: NDArray[np.float64], eigenvalues_only: bool = False
    ) -> NDArray[np.float64]:
        """All frequencies the tolerance bounds (THz): commensurate, then :attr:`qpoints`.

        ``eigenvalues_only`` as in :meth:`frequencies`.
        """
        return np.concatenate(
            [
                self.frequencies(force_constants, eigenvalues_only),
                self.qpoint_frequencies(force_constants).ravel(),
            ]
        )

    # -- sampling ----------------------------------------------------------------------
    def draw_population(
        self,
        force_constants: NDArray[np.float64],
        n_snapshots: int,
        progress: bool = False,
        distribution: ThermalDistribution | None = None,
    ) -> Population:
        """Draw ``n_snapshots`` (rounded up to pairs) snapshots and evaluate them.

        ``distribution`` is that of ``force_constants`` when already at hand.
        """
        n_pairs = (n_snapshots + 1) // 2
        index = self.state.n_populations_drawn
        # common random numbers: population k draws the same normal deviates at every
        # temperature, so differences between temperatures are far less noisy than values
        rng = np.random.default_rng([self.settings.seed, index])
        distribution = distribution or self.distribution(force_constants)
        displacements = distribution.sample(n_pairs, rng)
        energies, forces = self.calculator.compute(
            supercell_atoms(self.phonon, displacements), progress=progress
        )
        self.state.n_populations_drawn += 1
        self._distributions[index] = distribution
        return Population(displacements, forces, energies, force_constants.copy(), index)

    def weights(self, target: ThermalDistribution) -> list[NDArray[np.float64]]:
        """Importance weights of each population for the ``target`` distribution.

        Weights are normalised so that they sum to the population's effective
        sample size; antithetic partners always share a weight.
        """
        all_weights = []
        for population in self.state.populations:
            log_w = target.log_density(population.displacements) - self._population_distribution(
                population
            ).log_density(population.displacements)
            w = np.exp(log_w - log_w.max())
            all_weights.append(w * _effective_sample_size(w) / w.sum())
        return all_weights

    # -- fitting -----------------------------------------------------------------------
    def _resample_counts(self) -> NDArray[np.float64]:
        """Multiplicities ``(n_bootstrap, n_snapshots)`` of the bootstrap resamples of this
        iteration: antithetic pairs drawn with replacement within each population."""
        rng = np.random.default_rng([self.settings.seed, 7919, len(self.state.history)])
        counts = np.zeros((self.settings.n_bootstrap, sum(map(len, self.state.populations))))
        for sample in counts:
            start = 0
            for population in self.state.populations:
                n_pairs = len(population) // 2
                pair_counts = rng.multinomial(n_pairs, np.full(n_pairs, 1.0 / n_pairs))
                sample[start : start + 2 * n_pairs] = np.repeat(pair_counts, 2)
                start += 2 * n_pairs
        return counts

    def _fit(
        self, weights: list[NDArray[np.float64]], counts: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]:
        """Force constants fitted to the populations in use with ``weights``, ``(N, N, 3, 3)``;
        with ``counts`` (resample multiplicities, ``(m, n_snapshots)``), also those of each
        resample (weights times multiplicities), ``(1 + m, N, N, 3, 3)``, the fit first.

        All come from one pass over the snapshots (:meth:`ForceConstantFitter.fit_many`):
        the same numbers as refitting each resample.
        """
        displacements = np.concatenate([p.displacements for p in self.state.populations])
        forces = np.concatenate([p.forces - self.reference_forces for p in self.state.populations])
        w = np.concatenate(weights)
        rows = w[None, :] if counts is None else np.vstack([w, w * counts])
        fits = self.fitter.fit_many(displacements, forces, rows)
        return fits[0] if counts is None else fits

    def _degenerate_groups(self, frequencies: NDArray[np.float64]) -> NDArray[np.int_]:
        """Group index of each reported frequency: modes degenerate (within 1e-3 THz) at
        the same q-point (all commensurate q-points count as one) share a group."""
        n_commensurate = 3 * self.n_atoms - 3
        blocks = [frequencies[:n_commensurate]]
        if len(self.qpoints):
            blocks += list(frequencies[n_commensurate:].reshape(len(self.qpoints), -1))
        groups, start = [], 0
        for block in blocks:
            steps = np.diff(block, prepend=-np.inf) > 1e-3  # each block is ascending
            groups.append(start + np.cumsum(steps) - 1)
            start = groups[-1][-1] + 1 if len(block) else start
        return np.concatenate(groups)

    def _bootstrap_errors(
        self, resampled: NDArray[np.float64], frequencies: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Bootstrap (over antithetic pairs) standard errors of the reported frequencies.

        ``resampled`` are the force constants fitted to each resample (:meth:`_fit` with
        :meth:`_resample_counts`), ``frequencies`` those of the fit. Symmetry makes
        degenerate modes equally uncertain: their variances are averaged, which steadies
        the estimate of the largest error (what the sample size follows).
        """
        samples = [self.reported_frequencies(fc, eigenvalues_only=True) for fc in resampled]
        variances = np.var(samples, axis=0, ddof=1)
        groups = self._degenerate_groups(frequencies)
        group_variances = np.bincount(groups, variances) / np.bincount(groups)
        return np.sqrt(group_variances[groups])

    # -- iteration ---------------------------------------------------------------------
    def step(self, progress: bool = False) -> IterationRecord:
        """Do one SSCHA iteration and return its diagnostics."""
        settings, state = self.settings, self.state
        current = state.force_constants
        target = self.distribution(current)  # the one diagonalisation of this step
        weights = self.weights(target)
        kept = [
            (p, w)
            for p, w in zip(state.populations, weights, strict=True)
            if w.sum() >= settings.min_ess_fraction * len(p)
        ]
        state.populations = [p for p, _ in kept]
        weights = [w for _, w in kept]
        active_ess = float(sum(w.sum() for w in weights))
        # New snapshots: when reweighting has used up the kept ones, when only the
        # statistical error stood in the way of convergence at the last iteration, or
        # when only the sampling did (every snapshot drawn far from the self-consistent
        # force constants: a result resting on importance weights alone).
        last = state.history[-1] if state.history else None
        self_consistent = (
            last is not None and last.max_frequency_change <= 0.25 * settings.frequency_tolerance
        )
        noise_limited = self_consistent and last.frequency_error > settings.frequency_tolerance
        sampled_far = self_consistent and not noise_limited and not last.converged
        n_new = 0
        if (
            active_ess < settings.min_ess_fraction * state.n_target_snapshots
            or (noise_limited and active_ess < state.n_target_snapshots)
            or sampled_far
        ):
            n_new = max(
                state.n_target_snapshots - round(active_ess),
                state.n_target_snapshots // 2 if sampled_far else 0,
                settings.initial_snapshots,
            )
            n_new += n_new % 2
            state.populations.append(self.draw_population(current, n_new, progress, target))
            weights.append(np.ones(n_new))
            active_ess += n_new
        fits = self._fit(weights, self._resample_counts())  # the fit, then each resample's
        fitted = fits[0]
        new_frequencies = self.reported_frequencies(fitted)
        errors = self._bootstrap_errors(fits[1:], new_frequencies)
        current_frequencies = np.concatenate(
            [target.modes.frequencies, self.qpoint_frequencies(current).ravel()]
        )
        change = new_frequencies - current_frequencies
        rms_change = float(np.sqrt(np.mean(change**2)))
        max_change = float(np.abs(change).max())
        max_error = float(errors.max())
        tolerance = settings.frequency_tolerance
        # Every reported mode must meet the tolerance. Reweighting iterations cost no
        # force evaluation, so self-consistency is driven well below the statistical
        # target: it adds no bias to the result. And the newest population must have
        # been drawn within the tolerance of the result: importance weights alone carry
        # a sample only so far (their bootstrap errors miss what the sample never saw).
        newest = max(state.populations, key=lambda population: population.index)
        sampled_frequencies = self.reported_frequencies(
            newest.sampling_force_constants, eigenvalues_only=True
        )
        sampled_near = bool(np.abs(sampled_frequencies - new_frequencies).max() <= tolerance)
        converged = bool(max_change <= 0.25 * tolerance and max_error <= tolerance and sampled_near)

        previous = state.n_force_evaluations
        mixing = self._mixing(n_new, max_change, max_error)
        record = IterationRecord(
            iteration=len(state.history) + 1,
            n_new_snapshots=n_new,
            n_force_evaluations=previous + n_new,
            n_active_snapshots=sum(len(p) for p in state.populations),
            effective_sample_size=active_ess,
            frequency_change=rms_change,
            max_frequency_change=max_change,
            frequency_error=max_error,
            rms_frequency_error=float(np.sqrt(np.mean(errors**2))),
            min_frequency=float(new_frequencies[: 3 * self.n_atoms - 3].min()),
            n_capped_modes=target.n_capped_modes(settings.max_displacement),
            converged=converged,
            mixing=mixing,
        )
        state.history.append(record)
        state.fitted_force_constants = fitted
        state.frequency_errors = errors
        if converged:
            state.force_constants = fitted
            return record
        # The statistical error scales as 1/sqrt(n). Far from self-consistency a fit
        # needs no more precision than a fraction of the step it takes; close to it,
        # the largest error must fall to 90 % of the tolerance. (The largest of many
        # bootstrap errors is biased high at small samples: no wider margin is needed.)
        # The target grows at most MAX_SAMPLE_GROWTH-fold per iteration: the bootstrap
        # of a few snapshots can overestimate the error tenfold (its resamples are nearly
        # rank-deficient fits), and one such estimate must not commit hundreds of force
        # evaluations. It never shrinks: a smaller sample only adds noise to the fits.
        target_error = max(0.9 * tolerance, 0.3 * max_change)
        if max_error > target_error:
            wanted = active_ess * min((max_error / target_error) ** 2, MAX_SAMPLE_GROWTH)
            wanted_even = 2 * int(np.ceil(wanted / 2))
            state.n_target_snapshots = min(
                max(wanted_even, state.n_target_snapshots), settings.max_snapshots
            )
        state.force_constants = (1 - mixing) * current + mixing * fitted
        return record

    def _mixing(self, n_new: int, max_change: float, max_error: float) -> float:
        """The mixing after this iteration: the last one's, adapted to the residual.

        Mixing a fraction a of the fit converges a mode whose fitted frequency responds to
        the current one with slope g only if a < 2 / (1 - g). A strongly anharmonic soft
        mode (stiffer now, softer next: g << 0) overshoots at the default a = 0.5 and its
        residual grows from one iteration to the next. Growth on the same snapshots, or by
        more than twice the statistical error on new ones, halves a (down to
        ``MIN_MIXING_FRACTION`` of the setting); a residual that shrinks on the same
        snapshots raises it by a quarter again (up to the setting), since the slope
        near self-consistency is often milder than during the first large steps.
        """
        history, mixing = self.state.history, self.settings.mixing
        if not history:
            return mixing
        last = history[-1]
        current = last.mixing if last.mixing is not None else mixing
        noise = 2 * max_error if n_new else 0.0
        if max_change > last.max_frequency_change + noise:
            return max(current / 2, MIN_MIXING_FRACTION * mixing)
        if n_new == 0 and max_change < last.max_frequency_change:
            return min(1.25 * current, mixing)
        return current

    def stop_reason(self) -> str | None:
        """Why the run must stop now, or None to go on."""
        state, settings = self.state, self.settings
        if state.converged:
            return "converged"
        if len(state.history) >= settings.max_iterations:
            return f"not converged after {settings.max_iterations} iterations"
        if state.n_force_evaluations >= settings.max_force_evaluations:
            return f"not converged within {settings.max_force_evaluations} force evaluations"
        return None

    def run(
        self,
        progress: bool = False,
        callback: Callable[[IterationRecord, SSCHA], None] | None = None,
    ) -> SSCHAResult:
        """Iterate until converged or a limit is reached, then return the result."""
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=self.settings.max_iterations,
                desc=f"SSCHA {self.temperature:g} K",
                unit="it",
                leave=False,
            )
        while self.stop_reason() is None:
            record = self.step()
            if callback is not None:
                callback(record, self)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    dw=f"{record.frequency_change:.3f}",
                    err=f"{record.frequency_error:.3f}",
                    nfe=record.n_force_evaluations,
                )
        if bar is not None:
            bar.close()
        return self.result()

    # -- result ------------------------------------------------------------------------
    def free_energy(
        self, force_constants: NDArray[np.float64]
    ) -> tuple[float | None, float | None, str]:
        """SSCHA free energy (eV/atom) of ``force_constants`` with its standard error.

        Returns ``(None, None, reason)`` when the force constants have imaginary modes
        or no snapshots are available.
        """
        target = self.distribution(force_constants)
        if target.modes.frequencies.min() < -1e-3:
            return None, None, "undefined: the force constants have imaginary modes"
        weights = self.weights(target)
        if not weights:
            return None, None, "undefined: no snapshots"
        w = np.concatenate(weights)
        displacements = np.concatenate([p.displacements for p in self.state.populations])
        energies = np.concatenate([p.energies for p in self.state.populations])
        harmonic_energy = -0.5 * np.sum(
            displacements * harmonic_forces(force_constants, displacements), axis=(1, 2)
        )
        anharmonic = (energies - self.reference_energy - harmonic_energy) / self.n_atoms
        mean = float(np.sum(w * anharmonic) / w.sum())
        error = float(np.sqrt(np.sum(w**2 * (anharmonic - mean) ** 2)) / w.sum())

        harmonic_per_atom = harmonic_free_energy(
            self.phonon,
            force_constants,
            self.temperature,
            self.settings.statistics,
            self.settings.free_energy_mesh,
        )
        free_energy = self.reference_energy / self.n_atoms + harmonic_per_atom + mean
        return free_energy, error, "ok"

    def anharmonicity(self, force_constants: NDArray[np.float64]) -> AnharmonicityScore:
        """sigma^A (Knoop et al. 2020) of the ensemble against ``force_constants``.

        The snapshots in use, reweighted to the thermal distribution of ``force_constants``
        (no new force evaluation), by element and by Wyckoff site too
        (:func:`tdphonon.anharmonicity.anharmonicity_score`). With the SSCHA's effective
        force constants it measures what even the renormalised harmonic model misses; with
        the harmonic ones, the anharmonicity of the thermal forces.
        """
        weights = np.concatenate(self.weights(self.distribution(force_constants)))
        displacements = np.concatenate([p.displacements for p in self.state.populations])
        forces = np.concatenate([p.forces - self.reference_forces for p in self.state.populations])
        seed = self.settings.seed
        scores = [
            anharmonicity_score(displacements, forces, force_constants, weights, groups, seed=seed)
            for groups in (list(self.phonon.supercell.symbols), wyckoff_labels(self.phonon))
        ]
        by_element, by_site = scores
        return AnharmonicityScore(
            sigma=by_element.sigma,
            sigma_error=by_element.sigma_error,
            by_group={**by_element.by_group, **by_site.by_group},
            by_group_error={**by_element.by_group_error, **by_site.by_group_error},
        )

    def result(self) -> SSCHAResult:
        """Result of the iterations done so far."""
        state = self.state
        if not state.history:
            raise RuntimeError("no SSCHA iteration has been done")
        final = state.fitted_force_constants if state.converged else state.force_constants
        assert final is not None
        free_energy, free_energy_error, note = self.free_energy(final)
        n_commensurate = 3 * self.n_atoms - 3
        errors = state.frequency_errors
        assert errors is not None
        qpoint_frequencies = self.qpoint_frequencies(final)
        reason = self.stop_reason() or "stopped before convergence"
        if state.history[-1].n_capped_modes:
            reason += (
                f" ({state.history[-1].n_capped_modes} modes sampled at the displacement cap "
                f"of {self.settings.max_displacement} Å: not a converged SCHA solution for them)"
            )
        return SSCHAResult(
            temperature=self.temperature,
            settings=dataclasses.replace(self.settings),
            force_constants=final,
            converged=state.converged,
            message=reason,
            n_force_evaluations=state.n_force_evaluations + self.n_reference_evaluations,
            n_iterations=len(state.history),
            frequencies=self.frequencies(final),
            frequency_errors=errors[:n_commensurate],
            free_energy=free_energy,
            free_energy_error=free_energy_error,
            free_energy_note=note,
            history=list(state.history),
            qpoints=self.qpoints.copy(),
            qpoint_frequencies=qpoint_frequencies,
            qpoint_frequency_errors=errors[n_commensurate:].reshape(qpoint_frequencies.shape),
            anharmonicity=self.anharmonicity(final),
        )
