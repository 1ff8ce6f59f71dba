"""Tests of the instrumented competitor runners in benchmarks/competitors.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

pytest.importorskip("hiphive")
pytest.importorskip("symfc")

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "competitors.py"


def _load_competitors():
    if "competitors" in sys.modules:
        return sys.modules["competitors"]
    spec = importlib.util.spec_from_file_location("competitors", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["competitors"] = module
    spec.loader.exec_module(module)
    return module


C = _load_competitors()

N_SNAPSHOTS = 6
N_ATOMS = 32


@pytest.fixture(scope="module")
def al32():
    """fcc Al (EMT), 32-atom (2x2x2 conventional) supercell, harmonic fc and frequencies."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    unitcell = PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell[:],
        scaled_positions=atoms.get_scaled_positions(),
    )
    phonon = Phonopy(unitcell, supercell_matrix=2 * np.eye(3, dtype=int), primitive_matrix="F")
    fc = C.compute_harmonic_force_constants(phonon, EMT())
    return phonon, fc, C.commensurate_frequencies(phonon, fc)


def _check_fc(phonon, fc, harmonic_freqs, rtol=0.2):
    assert fc.shape == (N_ATOMS, N_ATOMS, 3, 3)
    np.testing.assert_allclose(fc, fc.transpose(1, 0, 3, 2), atol=1e-6)
    freqs = C.commensurate_frequencies(phonon, fc)
    assert freqs.shape == (3 * N_ATOMS - 3,)
    assert np.all(freqs > 0)
    np.testing.assert_allclose(freqs, harmonic_freqs, rtol=rtol)


def test_commensurate_frequencies_match_phonopy(al32):
    from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

    phonon, fc, freqs = al32
    ph = phonon.replicate()
    ph.force_constants = fc
    smat = np.rint(np.linalg.inv(ph.primitive_matrix) @ ph.supercell_matrix).astype(int)
    ph.run_qpoints(get_commensurate_points(smat))
    expected = np.sort(ph.qpoints.frequencies.ravel())[3:]
    np.testing.assert_allclose(freqs, expected, atol=1e-8)
    assert 2.0 < freqs[0] and freqs[-1] < 10.0


def test_counting_calculator_counts_distinct_structures(al32):
    phonon = al32[0]
    atoms = C.phonopy_atoms_to_ase(phonon.supercell)
    counter = C.CountingCalculator(EMT(), reference=atoms)
    atoms.calc = counter
    atoms.get_forces()
    atoms.get_potential_energy()
    assert counter.n_evaluations == 1
    atoms.positions[0, 0] += 0.1
    atoms.get_forces()
    assert counter.n_evaluations == 2
    assert counter.sum_square_displacement == pytest.approx(0.01)
    assert counter.n_atoms_seen == 2 * N_ATOMS


def test_mlpsscha_from_scratch(al32):
    phonon, _, harmonic = al32
    history = C.run_mlpsscha(
        phonon, EMT(), 300.0, n_snapshots=N_SNAPSHOTS, max_iterations=2, seed=1
    )
    assert [h.iteration for h in history] == [0, 1, 2]
    # reference supercell + initialisation step + one sample per iteration
    assert [h.n_force_evaluations for h in history] == [1 + N_SNAPSHOTS * k for k in (1, 2, 3)]
    times = [h.wall_time for h in history]
    assert all(t > 0 for t in times) and times == sorted(times)
    # initialisation uses 0.01 Å displacements (one zero-displacement reference)
    assert history[0].mean_square_displacement == pytest.approx(
        1e-4 * N_SNAPSHOTS / (N_SNAPSHOTS + 1)
    )
    for h in history:
        _check_fc(phonon, h.force_constants, harmonic)
    assert phonon.force_constants is None  # the input is left untouched


def test_hiphive_from_scratch(al32):
    phonon, _, harmonic = al32
    history = C.run_hiphive_scph(
        phonon, EMT(), 300.0, n_snapshots=N_SNAPSHOTS, max_iterations=2, seed=1
    )
    assert [h.iteration for h in history] == [0, 1, 2]
    # initial (rattled) model + one sample per iteration; no reference structure
    assert [h.n_force_evaluations for h in history] == [N_SNAPSHOTS * k for k in (1, 2, 3)]
    times = [h.wall_time for h in history]
    assert all(t > 0 for t in times) and times == sorted(times)
    for h in history:
        _check_fc(phonon, h.force_constants, harmonic)


def test_hiphive_starts_from_given_fc_in_phonopy_order(al32):
    phonon, fc, harmonic = al32
    history = C.run_hiphive_scph(
        phonon,
        EMT(),
        300.0,
        n_snapshots=N_SNAPSHOTS,
        max_iterations=1,
        initial_force_constants=fc,
    )
    assert [h.n_force_evaluations for h in history] == [0, N_SNAPSHOTS]
    # The default cutoff (just below L/2 = 4.05 Å) keeps nearest neighbours only,
    # so the projected fc equal the harmonic ones on those pairs, up to the
    # acoustic sum rule, and vanish elsewhere.
    fc0 = history[0].force_constants
    dist = C.phonopy_atoms_to_ase(phonon.supercell).get_all_distances(mic=True)
    nn = (dist > 0.1) & (dist < 3.0)
    assert np.linalg.norm((fc0 - fc)[nn]) < 0.1 * np.linalg.norm(fc[nn])
    np.testing.assert_array_equal(fc0[(dist > 3.0)], 0.0)
    for h in history:
        _check_fc(phonon, h.force_constants, harmonic)


def test_hiphive_seed_reproducible_and_global_state_restored(al32):
    phonon, fc, _ = al32
    np.random.seed(123)  # noqa: NPY002
    expected_next = np.random.random()  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    kwargs = {"n_snapshots": 3, "max_iterations": 1, "initial_force_constants": fc, "seed": 7}
    a = C.run_hiphive_scph(phonon, EMT(), 300.0, **kwargs)
    assert np.random.random() == expected_next  # noqa: NPY002
    b = C.run_hiphive_scph(phonon, EMT(), 300.0, **kwargs)
    np.testing.assert_array_equal(a[-1].force_constants, b[-1].force_constants)


@pytest.mark.parametrize("runner", ["mlpsscha", "hiphive"])
def test_quantum_displacements_exceed_classical(al32, runner):
    """Same seed and starting fc: each mode's quantum amplitude ≥ classical one."""
    phonon, fc, harmonic = al32
    run = C.run_mlpsscha if runner == "mlpsscha" else C.run_hiphive_scph
    msd = {}
    for statistics in ("quantum", "classical"):
        history = run(
            phonon,
            EMT(),
            800.0,
            statistics=statistics,
            n_snapshots=N_SNAPSHOTS,
            max_iterations=1,
            seed=3,
            initial_force_constants=fc,
        )
        assert history[-1].n_force_evaluations == N_SNAPSHOTS + (runner == "mlpsscha")
        _check_fc(phonon, history[-1].force_constants, harmonic, rtol=0.3)
        msd[statistics] = history[1].mean_square_displacement
    # (x/2) coth(x/2) with x = h nu / kT <= 0.5 for Al at 800 K: a few per cent
    assert msd["classical"] < msd["quantum"] < 1.1 * msd["classical"]
    # classical equipartition estimate, averaged over the commensurate modes
    from ase import units

    mass = float(phonon.supercell.masses[0])
    w2 = (harmonic / C.get_physical_units().DefaultToTHz) ** 2
    expected = np.sum(units.kB * 800.0 / (mass * w2)) / N_ATOMS
    assert msd["classical"] == pytest.approx(expected, rel=0.35)


def test_classical_mlpsscha_patch_is_temporary(al32, monkeypatch):
    import phonopy.api_phonopy

    seen = []
    original = phonopy.api_phonopy.RandomDisplacements

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dist_func"))
        return original(*args, **kwargs)

    monkeypatch.setattr(phonopy.api_phonopy, "RandomDisplacements", spy)
    phonon, fc, _ = al32
    sscha = C.make_mlpsscha(
        phonon,
        EMT(),
        800.0,
        statistics="classical",
        n_snapshots=2,
        max_iterations=1,
        initial_force_constants=fc,
    )
    assert isinstance(sscha, C.ClassicalMLPSSCHA)
    sscha.sample_supercells()
    assert seen == ["classical"]
    assert "init_random_displacements" not in vars(sscha.phonopy)


def test_invalid_arguments(al32):
    phonon, fc, _ = al32
    with pytest.raises(ValueError, match="statistics"):
        C.run_mlpsscha(
            phonon, EMT(), 300.0, statistics="boltzmann", n_snapshots=2, max_iterations=1
        )
    with pytest.raises(ValueError, match="shape"):
        C.run_hiphive_scph(
            phonon, EMT(), 300.0, n_snapshots=2, max_iterations=1, initial_force_constants=fc[:1]
        )
