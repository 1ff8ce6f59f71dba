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


def test_sublattices_of_each_index_are_enumerated_once():
    """The number of sublattices of index n of Z^3 is sum_{d|n} d sigma(d) (7, 13, 35, 31)."""
    from tdphonon.structures import _hermite_normal_forms

    for n, expected in [(2, 7), (3, 13), (4, 35), (5, 31)]:
        forms = _hermite_normal_forms(n)
        assert len(forms) == expected
        assert np.all(np.rint(np.linalg.det(forms)) == n)


@pytest.mark.parametrize(
    ("structure", "cells"),
    [
        # wurtzite CdS (P6_3mc): near-cubic 16-cell supercells broke the 6-fold axis;
        # the in-plane 2x2 keeps it and its images are 2a = 8.3 Å apart
        (
            Structure(
                Lattice.hexagonal(4.14, 6.72),
                ["Cd", "Cd", "S", "S"],
                [
                    [1 / 3, 2 / 3, 0],
                    [2 / 3, 1 / 3, 0.5],
                    [1 / 3, 2 / 3, 0.377],
                    [2 / 3, 1 / 3, 0.877],
                ],
            ),
            8,
        ),
        # body-centred tetragonal CaC2 (I4/mmm): the near-cubic 16-cell supercell broke the
        # 4-fold axis; every sublattice up to that size is searched for one that keeps it
        (
            Structure(
                Lattice.tetragonal(3.88, 6.37),
                ["Ca", "Ca", "C", "C", "C", "C"],
                [
                    [0, 0, 0],
                    [0.5, 0.5, 0.5],
                    [0, 0, 0.405],
                    [0, 0, 0.595],
                    [0.5, 0.5, 0.905],
                    [0.5, 0.5, 0.095],
                ],
            ),
            None,
        ),
    ],
    ids=["wurtzite", "body-centred-tetragonal"],
)
def test_default_supercell_keeps_the_point_group(structure, cells):
    """The chosen supercell has the point group of the crystal (phonopy's own check), its
    images are min_length apart and it contains the zone-boundary points."""
    from tdphonon.structures import keeps_point_group, lattice_rotations, zone_boundary_qpoints

    primitive = standard_primitive(structure)
    matrix = choose_supercell_matrix(primitive, min_length=8.0)
    phonon = make_phonopy(primitive, matrix)
    assert phonon.symmetry.pointgroup_symbol == phonon.primitive_symmetry.pointgroup_symbol
    assert keeps_point_group(matrix.T, lattice_rotations(primitive))
    assert minimum_image_distance(phonon) >= 8.0 - 1e-6
    products = zone_boundary_qpoints(primitive) @ matrix
    np.testing.assert_allclose(products, np.rint(products), atol=1e-8)
    if cells is not None:
        assert round(np.linalg.det(matrix)) == cells
    # a supercell that breaks it is recognised
    assert not keeps_point_group(
        np.array([[1, 1, 0], [0, 2, 0], [0, 0, 1]]), lattice_rotations(primitive)
    )
