"""Structures, harmonic force constants and phonon spectra (EMT, no workflow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import phonopy
import pytest
from pymatgen.core import Lattice, Structure

from tdphonon.harmonic import harmonic_force_constants
from tdphonon.phonons import phonon_spectrum
from tdphonon.potentials import get_calculator
from tdphonon.structures import (
    StructureError,
    check_structure,
    choose_supercell_matrix,
    make_phonopy,
    minimum_image_distance,
    read_structure,
    standard_primitive,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def frequencies(phonon, qpoints):
    phonon.run_qpoints(qpoints)
    return phonon.qpoints.frequencies


def test_read_structure_errors(tmp_path):
    with pytest.raises(StructureError, match="not found"):
        read_structure(tmp_path / "missing.cif")
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("this is not a crystal\n")
    with pytest.raises(StructureError, match="cannot read"):
        read_structure(garbage)
    molecule = tmp_path / "water.xyz"
    molecule.write_text("3\n\nO 0 0 0\nH 0.76 0.59 0\nH -0.76 0.59 0\n")
    with pytest.raises(StructureError, match="non-periodic"):
        read_structure(molecule)


def test_disordered_structure_is_rejected():
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(StructureError, match="disordered"):
        check_structure(alloy)


@pytest.mark.parametrize("name", ["Si.cif", "SrTiO3_cubic.cif", "Al_fcc.cif", "NaCl.cif"])
def test_examples_read_and_get_supercells(name):
    structure = standard_primitive(read_structure(EXAMPLES / name))
    matrix = choose_supercell_matrix(structure, min_length=10.0)
    phonon = make_phonopy(structure, matrix)
    assert minimum_image_distance(phonon) >= 10.0 - 1e-6
    assert len(phonon.supercell) <= 600


def test_harmonic_force_constants_match_phonopy_finite_differences(al_emt_phonon):
    """tdphonon's harmonic step (primitive cell, symfc) vs phonopy's standard FD run."""
    calculator = get_calculator("emt")
    structure = standard_primitive(read_structure(EXAMPLES / "Al_fcc.cif"))
    phonon = make_phonopy(structure, [[-2, 2, 2], [2, -2, 2], [2, 2, -2]])
    result = harmonic_force_constants(phonon, calculator)
    assert result.n_force_evaluations == calculator.n_force_evaluations == 3
    qpoints = [[0.5, 0.0, 0.5], [0.5, 0.5, 0.5], [0.375, 0.375, 0.75]]  # X, L, K (primitive)
    np.testing.assert_allclose(
        frequencies(phonon, qpoints), frequencies(al_emt_phonon, qpoints), atol=0.02
    )


def test_spectrum_and_export_round_trip(tmp_path):
    calculator = get_calculator("emt")
    structure = standard_primitive(read_structure(EXAMPLES / "Al_fcc.cif"))
    phonon = make_phonopy(structure, choose_supercell_matrix(structure, 8.0))
    harmonic = harmonic_force_constants(phonon, calculator)
    spectrum = phonon_spectrum(phonon, harmonic.force_constants)
    assert not spectrum.has_imaginary_modes
    gamma = spectrum.labelled_frequencies["Gamma"]
    np.testing.assert_allclose(gamma, 0, atol=1e-3)
    assert 5 < max(spectrum.labelled_frequencies["X"]) < 12
    assert spectrum.dos.frequencies.max() > 5

    path = tmp_path / "phonopy_harmonic.yaml"
    phonon.save(path, settings={"force_constants": True})
    loaded = phonopy.load(path)
    qpoints = [[0.5, 0, 0.5], [0.25, 0.1, 0.0]]
    np.testing.assert_allclose(
        frequencies(loaded, qpoints), frequencies(phonon, qpoints), atol=1e-8
    )


def test_too_small_supercell_is_rejected():
    from tdphonon.flows import SSCHAMaker
    from tdphonon.structures import check_supercell

    structure = standard_primitive(read_structure(EXAMPLES / "Al_fcc.cif"))
    with pytest.raises(StructureError, match="supercell too small"):
        check_supercell(structure, [1, 1, 1])
    check_supercell(structure, [2, 2, 2])
    with pytest.raises(StructureError, match="supercell too small"):
        SSCHAMaker(model="emt", supercell_matrix=[1, 1, 1]).make(structure)


@pytest.mark.parametrize(
    ("name", "labels"), [("SrTiO3_cubic.cif", 4), ("Si.cif", 3), ("Al_fcc.cif", 3)]
)
def test_default_supercell_contains_zone_boundary_points(name, labels):
    """Soft modes sit at zone-boundary points (R, M in SrTiO3): the supercell samples them."""
    from tdphonon.structures import zone_boundary_qpoints

    structure = standard_primitive(read_structure(EXAMPLES / name))
    qpoints = zone_boundary_qpoints(structure)
    assert len(qpoints) == labels
    phonon = make_phonopy(structure, choose_supercell_matrix(structure, 10.0))
    products = qpoints @ phonon.supercell_matrix  # q . supercell vectors (columns)
    np.testing.assert_allclose(products, np.rint(products), atol=1e-8)
