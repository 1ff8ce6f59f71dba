"""Renormalisation measures (tdphonon.phonons.renormalisation_measures)."""

from __future__ import annotations

import numpy as np
import pytest
from analytic_potentials import HarmonicCalculator
from phonopy import Phonopy
from phonopy.physical_units import get_physical_units

from tdphonon.phonons import harmonic_free_energy, renormalisation_measures
from tdphonon.potentials import AseCalculator
from tdphonon.sscha import SSCHA, SSCHASettings
from tdphonon.structures import supercell_atoms


def _conventional(phonon: Phonopy, force_constants: np.ndarray) -> Phonopy:
    """The same crystal and supercell with the 4-atom conventional cell as primitive cell:
    the zone-boundary modes fold onto Gamma as optical modes."""
    copy = Phonopy(phonon.unitcell, supercell_matrix=phonon.supercell_matrix, primitive_matrix="P")
    copy.force_constants = force_constants
    return copy


def test_scaled_force_constants_give_exact_shifts(al_emt_phonon):
    """Force constants x 1.21: every frequency x 1.1, relative shift 0.1 everywhere."""
    phonon = al_emt_phonon
    fc = phonon.force_constants
    free_energy, static = -3.5, -3.6
    measures = renormalisation_measures(
        phonon,
        fc,
        1.21 * fc,
        300.0,
        free_energy=free_energy,
        free_energy_error=1e-3,
        static_energy=static,
    )
    assert measures.renormalisation_mesh == [13, 13, 13]
    for value in (
        measures.mean_relative_shift,
        measures.mean_absolute_relative_shift,
        measures.max_relative_shift,
    ):
        assert value == pytest.approx(0.1, abs=1e-10)
    assert len(measures.max_relative_shift_qpoint) == 3
    assert measures.harmonic_lowest_optical_frequency is None  # one atom per cell
    assert measures.stabilised_modes == [] and measures.stabilised_mode_fraction == 0
    # the harmonic free energy is phonopy's, on the mesh, with the harmonic force constants
    phonon.run_mesh(50.0)
    phonon.run_thermal_properties(temperatures=[300.0], exclude_gamma_acoustic=True)
    expected = phonon.thermal_properties.free_energy[0] / get_physical_units().EvTokJmol
    assert measures.harmonic_free_energy == pytest.approx(static + expected, abs=1e-12)
    assert measures.anharmonic_free_energy == pytest.approx(free_energy - static - expected)
    assert measures.anharmonic_free_energy_error == 1e-3
    assert measures.anharmonic_free_energy_note == "ok"
    # classical statistics: the classical harmonic free energy
    classical = harmonic_free_energy(phonon, fc, 300.0, "classical")
    assert classical < expected  # no zero-point energy


@pytest.mark.filterwarnings("ignore:The input structure does not match")  # 4-atom cell
def test_lowest_optical_mode_at_gamma(al_emt_phonon):
    """4-atom cell: the lowest optical mode at Gamma (folded X mode) shifts by 10 % too."""
    fc = al_emt_phonon.force_constants
    phonon = _conventional(al_emt_phonon, fc)
    measures = renormalisation_measures(phonon, fc, 1.21 * fc, 300.0)
    phonon.run_qpoints([[0, 0, 0]])
    gamma = np.sort(phonon.qpoints.frequencies[0])
    assert measures.harmonic_lowest_optical_frequency == pytest.approx(gamma[3])
    assert measures.lowest_optical_frequency == pytest.approx(1.1 * gamma[3])
    assert measures.lowest_optical_shift == pytest.approx(0.1 * gamma[3])
    assert measures.lowest_optical_relative_shift == pytest.approx(0.1)
    assert measures.mean_relative_shift == pytest.approx(0.1, abs=1e-10)
    assert measures.anharmonic_free_energy is None
    assert measures.anharmonic_free_energy_note == "undefined: no SSCHA free energy"


def _x_point_softened(phonon: Phonopy, drop: float) -> np.ndarray:
    """Force constants whose squared frequencies at the three X points (and only there,
    among the commensurate q-points) are lowered by ``drop`` THz²: the supercell modes
    cos(2 pi q.r) of the X star, all polarisations, projected out with that weight.
    Translation invariance and the cubic symmetry are kept."""
    supercell = phonon.supercell
    a = phonon.unitcell.cell[0, 0]  # conventional cubic cell
    n = len(supercell)
    projector = np.zeros((n, n))
    for axis in range(3):
        wave = np.cos(2 * np.pi * supercell.positions[:, axis] / a)
        projector += np.outer(wave, wave) / n
    to_thz = get_physical_units().DefaultToTHz
    mass = supercell.masses[0]
    change = mass * drop / to_thz**2 * projector
    return phonon.force_constants - np.einsum("ij,ab->ijab", change, np.eye(3))


def test_stabilised_modes_are_listed_with_their_qpoints(al_emt_phonon):
    phonon = al_emt_phonon
    x_point = np.array([1.0, 0.0, 0.0]) / phonon.unitcell.cell[0, 0]  # Cartesian, no 2 pi
    phonon.run_qpoints([x_point @ phonon.primitive.cell.T])
    highest = phonon.qpoints.frequencies[0].max()
    unstable = _x_point_softened(phonon, highest**2 + 4.0)  # all three X modes imaginary
    measures = renormalisation_measures(phonon, unstable, phonon.force_constants, 300.0)
    assert measures.stabilised_modes and measures.stabilised_mode_fraction > 0

    def is_x(qpoint):  # (1, 0, 0) 2 pi / a up to the (bcc) reciprocal lattice of fcc
        cartesian = np.asarray(qpoint) @ np.linalg.inv(phonon.primitive.cell).T
        scaled = cartesian * phonon.unitcell.cell[0, 0]
        integer = np.round(scaled)
        return np.allclose(scaled, integer, atol=1e-6) and len(set(integer % 2)) == 2

    (x_mode,) = [mode for mode in measures.stabilised_modes if is_x(mode["qpoint"])]
    assert len(x_mode["harmonic_frequencies"]) == 3  # all three modes at X
    assert max(x_mode["harmonic_frequencies"]) == pytest.approx(-2.0, abs=1e-6)
    assert sorted(x_mode["frequencies"]) == pytest.approx(
        sorted(phonon.qpoints.frequencies[0]), abs=1e-6
    )
    # every listed mode is imaginary with the harmonic and real with the renormalised ones
    for mode in measures.stabilised_modes:
        assert max(mode["harmonic_frequencies"]) < -0.05 and min(mode["frequencies"]) > -0.05
    # relative shifts only where the harmonic frequency is real; no harmonic free energy
    assert measures.mean_relative_shift is not None
    assert measures.harmonic_free_energy is None and measures.anharmonic_free_energy is None
    assert "unstable" in measures.anharmonic_free_energy_note


@pytest.mark.parametrize(("temperature", "statistics"), [(300, "quantum"), (900, "classical")])
def test_harmonic_potential_has_no_renormalisation(al_emt_phonon, temperature, statistics):
    """A harmonic crystal: zero shifts and zero anharmonic free energy at any T."""
    phonon = al_emt_phonon
    harmonic = phonon.force_constants.copy()
    energy0 = -3.0
    calculator = AseCalculator(HarmonicCalculator(supercell_atoms(phonon)[0], harmonic, energy0))
    sscha = SSCHA(phonon, calculator, temperature, SSCHASettings(statistics=statistics))
    result = sscha.run()
    assert result.converged
    measures = renormalisation_measures(
        phonon,
        harmonic,
        result.force_constants,
        temperature,
        statistics=statistics,
        free_energy=result.free_energy,
        free_energy_error=result.free_energy_error,
        static_energy=energy0 / len(phonon.supercell),
    )
    for value in (measures.mean_relative_shift, measures.max_relative_shift):
        assert abs(value) < 1e-6
    assert measures.stabilised_modes == []
    assert measures.anharmonic_free_energy_note == "ok"
    error = measures.anharmonic_free_energy_error
    assert error is not None and error < 1e-10
    assert abs(measures.anharmonic_free_energy) <= max(3 * error, 1e-9)


def test_measures_do_not_depend_on_the_supercell():
    """EMT Al at 900 K in a 32- and a 108-atom supercell: sigma^A agrees within its
    combined statistical error plus 3 % (the force-constant range the smaller supercell
    cuts), the mean relative shift within 15 %."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from phonopy.structure.atoms import PhonopyAtoms

    from tdphonon.potentials import AseCalculator as Calculator
    from tdphonon.structures import to_ase_atoms

    atoms = bulk("Al", "fcc", a=4.05, cubic=True)
    unitcell = PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell[:],
        scaled_positions=atoms.get_scaled_positions(),
    )
    measured = {}
    for size in (2, 3):
        phonon = Phonopy(
            unitcell, supercell_matrix=np.eye(3, dtype=int) * size, primitive_matrix="F"
        )
        phonon.generate_displacements(distance=0.01)
        calculator = Calculator(EMT())
        _, forces = calculator.compute_ragged(
            [to_ase_atoms(s) for s in phonon.supercells_with_displacements]
        )
        phonon.forces = np.array(forces)
        phonon.produce_force_constants()
        harmonic = phonon.force_constants.copy()
        result = SSCHA(phonon, calculator, 900.0, SSCHASettings(statistics="classical")).run()
        assert result.converged, result.message
        measures = renormalisation_measures(
            phonon, harmonic, result.force_constants, 900.0, statistics="classical"
        )
        measured[size] = (result.anharmonicity, measures.mean_relative_shift)
    (small, shift_small), (large, shift_large) = measured[2], measured[3]
    combined = np.hypot(small.sigma_error, large.sigma_error)
    assert combined < 0.03 * large.sigma  # resolved to a few per cent
    assert abs(small.sigma - large.sigma) < 3 * combined + 0.03 * large.sigma, measured
    assert shift_small == pytest.approx(shift_large, rel=0.15, abs=0.005), measured
