"""The force-constant fit and the SSCHA bootstrap against symfc's own solver, refitted."""

from __future__ import annotations

import numpy as np
import pytest
from ase.calculators.emt import EMT
from symfc.solvers import FCSolverO2

from tdphonon import fitting
from tdphonon.fitting import ForceConstantFitter, harmonic_forces
from tdphonon.potentials import AseCalculator
from tdphonon.sampling import NormalModes, mode_frequencies
from tdphonon.sscha import SSCHA, SSCHASettings


def refit(fitter: ForceConstantFitter, displacements, forces, weights) -> np.ndarray:
    """The fit as symfc does it from scratch: snapshots of zero weight dropped, the others
    scaled by the square root of their weight, symfc's solver on them."""
    keep = weights > 0
    scale = np.sqrt(weights[keep])[:, None, None]
    solver = FCSolverO2(fitter._basis).solve(
        np.ascontiguousarray(displacements[keep] * scale),
        np.ascontiguousarray(forces[keep] * scale),
    )
    return solver.full_fc


@pytest.fixture(scope="module")
def emt_snapshots(al_emt_phonon):
    """Thermal antithetic snapshots of EMT Al (32 atoms) with their EMT forces (anharmonic:
    not in the span of any force constants) and a fitter for the supercell."""
    phonon = al_emt_phonon
    calculator = AseCalculator(EMT())
    sscha = SSCHA(phonon, calculator, 600.0, SSCHASettings())
    population = sscha.draw_population(phonon.force_constants, 12)
    forces = population.forces - sscha.reference_forces
    return sscha.fitter, population.displacements, forces


def test_fit_many_gives_the_numbers_of_refitting_every_weight_vector(emt_snapshots):
    fitter, displacements, forces = emt_snapshots
    n = len(displacements)
    rng = np.random.default_rng(3)
    importance = rng.uniform(0.3, 1.7, n)
    counts = np.repeat(rng.multinomial(n // 2, np.full(n // 2, 2.0 / n), size=4), 2, axis=1)
    weights = np.vstack([np.ones(n), importance, importance * counts])
    fits = fitter.fit_many(displacements, forces, weights)
    assert fits.shape == (len(weights), fitter.n_atoms, fitter.n_atoms, 3, 3)
    scale = np.abs(fits[0]).max()
    for row, fitted in zip(weights, fits, strict=True):
        np.testing.assert_allclose(
            fitted, refit(fitter, displacements, forces, row), rtol=0, atol=1e-10 * scale
        )
    # resamples differ from each other (the test compares different fits, not one)
    assert np.abs(fits[3] - fits[4]).max() > 1e-4 * scale
    # fit() is fit_many() of one weight vector
    np.testing.assert_allclose(
        fitter.fit(displacements, forces, importance), fits[1], rtol=0, atol=1e-12 * scale
    )


@pytest.mark.parametrize("chunk_bytes", [1, 2**30], ids=["one-snapshot-chunks", "one-chunk"])
def test_every_memory_path_gives_the_same_normal_equations(
    al_emt_phonon, emt_snapshots, monkeypatch, chunk_bytes
):
    """The design map kept whole, or rebuilt per batch of atoms; snapshots in one pass, or
    one at a time; normal matrices one snapshot at a time: the same normal equations."""
    fitter, displacements, forces = emt_snapshots
    weights = np.random.default_rng(1).uniform(0, 2, (3, len(displacements)))
    expected = fitter.normal_equations(displacements, forces, weights)
    assert fitter._cached_design_map is not None
    monkeypatch.setattr(fitting, "DESIGN_MAP_BYTES", 0)
    monkeypatch.setattr(fitting, "NORMAL_EQUATION_BYTES", chunk_bytes)
    monkeypatch.setattr(fitting, "GRAM_BYTES", 1)
    fresh = ForceConstantFitter(al_emt_phonon.supercell)
    assert fresh._cached_design_map is None
    assert len(fresh._atom_batches()) > 1
    for got, want in zip(
        fresh.normal_equations(displacements, forces, weights), expected, strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def test_fit_rejects_bad_weights(emt_snapshots):
    fitter, displacements, forces = emt_snapshots
    with pytest.raises(ValueError, match="positive weight"):
        fitter.fit(displacements, forces, np.zeros(len(displacements)))
    with pytest.raises(ValueError, match="non-negative"):
        fitter.fit(displacements, forces, -np.ones(len(displacements)))
    with pytest.raises(ValueError, match="shape"):
        fitter.fit(displacements[:, :-1], forces[:, :-1])


def test_force_constants_of_coefficients_are_what_a_fit_recovers(emt_snapshots):
    """Forces of force constants in the basis are fitted back exactly (also in bulk)."""
    fitter, displacements, _ = emt_snapshots
    coefficients = np.random.default_rng(2).normal(size=(2, fitter.n_parameters))
    force_constants = fitter.force_constants(coefficients)
    np.testing.assert_allclose(force_constants[1], fitter.force_constants(coefficients[1]))
    forces = harmonic_forces(force_constants[0], displacements)
    np.testing.assert_allclose(
        forces, -np.einsum("ijab,njb->nia", force_constants[0], displacements), atol=1e-12
    )
    np.testing.assert_allclose(
        fitter.fit(displacements, forces), force_constants[0], atol=1e-9, rtol=0
    )
    # symmetric, and the acoustic sum rule
    np.testing.assert_allclose(
        force_constants[0], force_constants[0].transpose(1, 0, 3, 2), atol=1e-12
    )
    np.testing.assert_allclose(force_constants[0].sum(axis=1), 0, atol=1e-10)


def test_sscha_bootstrap_is_refitting_each_resample(al_emt_phonon):
    """The errors of an SSCHA step come from the fits of its resamples, which are those of
    refitting each resample (importance weights times pair multiplicities) from scratch."""
    phonon = al_emt_phonon
    sscha = SSCHA(phonon, AseCalculator(EMT()), 600.0, SSCHASettings(n_bootstrap=5))
    sscha.state.populations = [
        sscha.draw_population(phonon.force_constants, 8),
        sscha.draw_population(phonon.force_constants * 1.05, 6),
    ]
    target = sscha.distribution(phonon.force_constants * 1.02)
    weights = sscha.weights(target)
    counts = sscha._resample_counts()
    assert counts.shape == (5, 14)
    np.testing.assert_array_equal(counts[:, 0::2], counts[:, 1::2])  # pairs go together
    np.testing.assert_array_equal(counts[:, :8].sum(axis=1), 8)  # within each population
    np.testing.assert_array_equal(counts[:, 8:].sum(axis=1), 6)
    np.testing.assert_array_equal(counts, sscha._resample_counts())  # seeded
    fits = sscha._fit(weights, counts)
    displacements = np.concatenate([p.displacements for p in sscha.state.populations])
    forces = np.concatenate([p.forces - sscha.reference_forces for p in sscha.state.populations])
    w = np.concatenate(weights)
    scale = np.abs(fits[0]).max()
    expected = [refit(sscha.fitter, displacements, forces, row) for row in [w, *(w * counts)]]
    np.testing.assert_allclose(fits, expected, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(sscha._fit(weights), fits[0], rtol=0, atol=1e-12 * scale)
    # the errors: spread of the resamples' frequencies (eigenvalues only, or with vectors)
    frequencies = sscha.reported_frequencies(fits[0])
    errors = sscha._bootstrap_errors(fits[1:], frequencies)
    spread = np.std([sscha.reported_frequencies(fc) for fc in expected[1:]], axis=0, ddof=1)
    groups = sscha._degenerate_groups(frequencies)
    averaged = np.sqrt((np.bincount(groups, spread**2) / np.bincount(groups))[groups])
    np.testing.assert_allclose(errors, averaged, rtol=1e-8, atol=1e-9)
    assert errors.max() > 1e-3


def test_mode_frequencies_are_those_of_the_normal_modes(al_emt_phonon):
    masses = np.asarray(al_emt_phonon.supercell.masses)
    force_constants = al_emt_phonon.force_constants
    modes = NormalModes.from_force_constants(force_constants, masses)
    np.testing.assert_allclose(
        mode_frequencies(force_constants, masses), modes.frequencies, atol=1e-10
    )
    assert len(modes.frequencies) == 3 * len(masses) - 3


def test_sscha_leaves_the_phonon_object_alone(al_emt_phonon):
    """The SSCHA may be given a shared (cached) phonopy object: it does not modify it."""
    phonon = al_emt_phonon
    before = phonon.force_constants.copy()
    start = before * 1.01
    sscha = SSCHA(
        phonon,
        AseCalculator(EMT()),
        300.0,
        SSCHASettings(max_iterations=1),
        reference=(0.0, np.zeros((len(phonon.supercell), 3))),
        force_constants=start,
    )
    np.testing.assert_array_equal(sscha.state.force_constants, start)
    sscha.step()
    np.testing.assert_array_equal(phonon.force_constants, before)
