"""What the SSCHA jobs compute once and reuse: labelled q-points, symmetry, phonopy copies."""

from __future__ import annotations

import numpy as np
from monty.json import MontyDecoder, jsanitize
from phonopy import Phonopy
from pymatgen.core import Lattice, Structure

from tdphonon.jobs.sscha import HarmonicReference, _cached_supercell
from tdphonon.phonons import _with_force_constants, band_structure, labelled_qpoints
from tdphonon.structures import make_phonopy, standard_primitive


def _reference(structure: Structure) -> HarmonicReference:
    return HarmonicReference(
        structure=structure,
        supercell_matrix=[[2, 0, 0], [0, 2, 0], [0, 0, 2]],
        reference_energy=-1.0,
        reference_forces=np.zeros((8 * len(structure), 3)),
        labelled_frequencies={},
        has_imaginary_modes=False,
    )


def test_labelled_qpoints_are_found_once_and_travel_with_the_reference():
    structure = standard_primitive(
        Structure(
            Lattice.hexagonal(3.2, 5.2), ["Zn", "Zn"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]
        )
    )
    reference = _reference(structure)
    assert reference.labelled_qpoints is None
    found = reference.with_labelled_qpoints()
    expected = labelled_qpoints(structure)
    assert list(found.labelled_qpoints) == list(expected)  # the order errors are stored in
    for label, qpoint in expected.items():
        np.testing.assert_allclose(found.labelled_qpoints[label], qpoint)
    assert found.with_labelled_qpoints() is found  # not searched again
    # what the next iteration job receives: JSON-ready, same labels in the same order
    travelled = MontyDecoder().process_decoded(jsanitize(found.compact(), strict=True))
    assert list(travelled.labelled_qpoints) == list(expected)
    assert travelled.labelled_qpoints == found.labelled_qpoints
    # a reference made from a harmonic document has none yet (the document has no such field)
    from_doc = HarmonicReference.from_harmonic(
        {name: getattr(reference, name) for name in ("structure", "supercell_matrix")}
        | {
            "reference_energy": -1.0,
            "reference_forces": reference.reference_forces,
            "labelled_frequencies": {},
            "has_imaginary_modes": False,
        }
    )
    assert from_doc.labelled_qpoints is None


def test_supercell_symmetry_and_basis_are_built_once_per_process():
    structure = Structure(
        Lattice.cubic(4.05), ["Al"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )
    primitive = standard_primitive(structure)
    key = (primitive.to_json(), ((-1, 1, 1), (1, -1, 1), (1, 1, -1)))
    phonon, fitter = _cached_supercell(*key)
    again = _cached_supercell(*key)
    assert again[0] is phonon and again[1] is fitter
    assert len(phonon.supercell) == 4 == fitter.n_atoms
    assert phonon.force_constants is None


def test_phonopy_copies_share_the_symmetry_and_change_nothing(al_emt_phonon):
    original = al_emt_phonon
    before = original.force_constants.copy()
    results = (original.band_structure, original.mesh, original.dynamical_matrix)
    scaled = before * 1.21
    copy = _with_force_constants(original, scaled)
    assert copy is not original
    assert copy.symmetry is original.symmetry  # not searched again
    np.testing.assert_array_equal(original.force_constants, before)
    np.testing.assert_allclose(copy.force_constants, scaled)
    # the same phonons as a phonopy object built from scratch
    fresh = Phonopy(
        original.unitcell,
        supercell_matrix=original.supercell_matrix,
        primitive_matrix=original.primitive_matrix,
    )
    qpoints = [[0, 0, 0], [0.5, 0.25, 0.75], [0.1, 0.2, 0.3]]
    fresh.force_constants = scaled
    fresh.run_qpoints(qpoints)
    copy.run_qpoints(qpoints)
    np.testing.assert_allclose(copy.qpoints.frequencies, fresh.qpoints.frequencies, atol=1e-10)
    # exactly 10 % stiffer than the original's, whose results are untouched
    bands = band_structure(original, before)
    stiffer = band_structure(original, scaled)
    np.testing.assert_allclose(np.asarray(stiffer.bands), 1.1 * np.asarray(bands.bands), atol=1e-8)
    assert (original.band_structure, original.mesh, original.dynamical_matrix) == results


def test_nac_parameters_stay_on_the_original():
    structure = Structure(Lattice.cubic(5.64), ["Na", "Cl"] * 4, [
        [0, 0, 0], [0.5, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0],
        [0.5, 0, 0.5], [0, 0, 0.5], [0, 0.5, 0.5], [0.5, 0.5, 0.5],
    ])  # fmt: skip
    primitive = standard_primitive(structure)
    nac = {"born": [np.eye(3) * 1.1, -np.eye(3) * 1.1], "dielectric": np.eye(3) * 2.4}
    phonon = make_phonopy(primitive, np.eye(3, dtype=int) * 2, nac_params=nac)
    force_constants = np.zeros((16, 16, 3, 3))
    without = _with_force_constants(phonon, force_constants, nac=False)
    assert without.nac_params is None
    assert phonon.nac_params is not None
    assert _with_force_constants(phonon, force_constants).nac_params is phonon.nac_params
