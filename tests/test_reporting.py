"""What the documents, the table and the JSON say is what the numbers are (issue 12, section 5).

* acoustic pockets near Gamma: reported, and ``min_frequency`` is the true lowest frequency;
* Born effective charges (``--born``): LO-TO splitting where given, a note where missing;
* ``--supercell`` applies to the cell given, as phonopy's ``--dim``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import phonopy
import pytest
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from tdphonon.cli import main
from tdphonon.harmonic import harmonic_force_constants
from tdphonon.phonons import IMAGINARY_TOLERANCE, phonon_doc_force_constants, phonon_spectrum
from tdphonon.potentials import get_calculator
from tdphonon.structures import (
    StructureError,
    make_phonopy,
    map_to_standard_primitive,
    primitive_nac_params,
    primitive_supercell_matrix,
    read_born,
    read_structure,
    standard_primitive,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ROTATION = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
NIAL_BORN = "14.4\n10 0 0 0 10 0 0 0 10\n2 0 0 0 2 0 0 0 2\n-2 0 0 0 -2 0 0 0 -2\n"


def rotated(structure: Structure, rotation: np.ndarray = ROTATION) -> Structure:
    """The same crystal in a rotated Cartesian frame."""
    return Structure(
        Lattice(structure.lattice.matrix @ rotation.T), structure.species, structure.frac_coords
    )


def nial() -> Structure:
    """B2 NiAl: two elements that EMT knows."""
    return Structure(Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])


# -- acoustic pockets ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def al_force_constants():
    structure = standard_primitive(read_structure(EXAMPLES / "Al_fcc.cif"))
    phonon = make_phonopy(structure, [[-2, 2, 2], [2, -2, 2], [2, 2, -2]])
    return phonon, harmonic_force_constants(phonon, get_calculator("emt")).force_constants


def test_acoustic_pockets_are_reported(al_force_constants):
    """A tiny violation of the acoustic sum rule makes imaginary acoustic modes near Gamma:
    they are listed, min_frequency is phonopy's own minimum, has_imaginary_modes keeps the
    stated rule."""
    phonon, force_constants = al_force_constants
    clean = phonon_spectrum(phonon, force_constants)
    assert clean.acoustic_pockets == [] and not clean.has_imaginary_modes
    assert abs(clean.min_frequency) < 1e-3  # the acoustic modes at Gamma
    assert clean.min_frequency_excluding_acoustic_pockets > 1.0

    broken = force_constants.copy()
    for i in range(len(broken)):
        broken[i, i] -= 0.02 * np.eye(3)  # eV/Å²: the sum rule no longer holds
    spectrum = phonon_spectrum(phonon, broken)
    assert spectrum.min_frequency < -0.3
    assert spectrum.min_frequency_excluding_acoustic_pockets > 1.0
    assert not spectrum.has_imaginary_modes  # the rule: pockets near Gamma are left out
    pockets = spectrum.acoustic_pockets
    assert 0 < len(pockets) <= 10
    assert pockets[0]["frequency"] == pytest.approx(spectrum.min_frequency)
    assert np.allclose(pockets[0]["qpoint"], 0)  # the lowest at Gamma
    frequencies = [p["frequency"] for p in pockets]
    assert frequencies == sorted(frequencies) and max(frequencies) < IMAGINARY_TOLERANCE

    # phonopy on the same force constants and the same q-points (band path + 30 Å mesh)
    reference = phonopy.Phonopy(
        phonon.unitcell, supercell_matrix=phonon.supercell_matrix, primitive_matrix="P"
    )
    reference.force_constants = broken
    path = [q.frac_coords for q in spectrum.band_structure.qpoints]
    reference.run_qpoints(path)
    lowest = reference.qpoints.frequencies.min()
    reference.run_mesh(30.0, is_gamma_center=True)
    lowest = min(lowest, reference.mesh.frequencies.min())
    assert spectrum.min_frequency == pytest.approx(lowest, abs=1e-6)


# -- supercells ---------------------------------------------------------------------------------


def harmonic_supercell(structure: Structure, matrix) -> tuple[list, int]:
    """Supercell matrix of the harmonic job and its number of atoms (the flow is not run)."""
    from tdphonon.flows import SSCHAMaker

    flow = SSCHAMaker(model="emt", relax_maker=None, supercell_matrix=matrix).make(structure)
    job_matrix = flow.jobs[0].function_kwargs["supercell_matrix"]
    primitive = standard_primitive(structure)
    return job_matrix, len(make_phonopy(primitive, job_matrix).supercell)


def test_supercell_applies_to_the_cell_given():
    conventional = read_structure(EXAMPLES / "Al_fcc.cif")
    assert len(conventional) == 4
    matrix, n_atoms = harmonic_supercell(conventional, [3, 3, 3])
    assert n_atoms == 108 and matrix == [[-3, 3, 3], [3, -3, 3], [3, 3, -3]]
    assert harmonic_supercell(rotated(conventional), [3, 3, 3])[1] == 108
    primitive = standard_primitive(conventional)
    assert harmonic_supercell(primitive, [3, 3, 3]) == ([[3, 0, 0], [0, 3, 0], [0, 0, 3]], 27)
    # the primitive 2x2x2 written in the conventional basis
    assert harmonic_supercell(conventional, [[0, 1, 1], [1, 0, 1], [1, 1, 0]])[1] == 8

    # the same supercell: same lattice (up to the rotation) and the same atoms
    mapping = map_to_standard_primitive(rotated(conventional))
    prim_matrix = primitive_supercell_matrix(
        rotated(conventional), [[1, 0, 0], [0, 2, 0], [0, 0, 3]]
    )
    ours = make_phonopy(mapping.primitive, prim_matrix).supercell
    theirs = make_phonopy(rotated(conventional), [[1, 0, 0], [0, 2, 0], [0, 0, 3]]).supercell
    assert len(ours) == len(theirs) == 24
    np.testing.assert_allclose(Lattice(ours.cell).abc, Lattice(theirs.cell).abc, atol=1e-6)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([[1.5, 0, 0], [0, 2, 0], [0, 0, 2]], "must be integers"),
        ([-2, 2, 2], "positive one"),
        ([[1, 0, 0], [1, 0, 0], [0, 0, 1]], "determinant 0"),
        ([2, 2], "3 or 3x3 integers"),
    ],
)
def test_bad_supercell_matrix_is_one_line_error(matrix, message):
    from tdphonon.flows import SSCHAMaker

    with pytest.raises(StructureError, match=message) as error:
        SSCHAMaker(model="emt", supercell_matrix=matrix).make(
            read_structure(EXAMPLES / "Al_fcc.cif")
        )
    assert "--supercell" in str(error.value) and "\n" not in str(error.value)


# -- Born effective charges ---------------------------------------------------------------------


def _dft_case(shared_dir: Path, name: str, rotation: np.ndarray, tmp_path: Path):
    """DFT force constants and a BORN file of a compound of the shared data, rotated."""
    from phonopy.file_IO import write_BORN
    from pymatgen.io.phonopy import get_pmg_structure

    path = shared_dir / "data" / "phonon-forcesets" / name / "phonopy_params.yaml.xz"
    reference = phonopy.load(path, is_compact_fc=False)
    born = np.asarray(reference.nac_params["born"])
    cell = reference.primitive.copy()
    cell.cell = cell.cell @ rotation.T
    write_BORN(  # phonopy's writer: the independent atoms of the primitive cell
        cell,
        np.einsum("ab,ibc,dc->iad", rotation, born, rotation),
        rotation @ reference.nac_params["dielectric"] @ rotation.T,
        filename=tmp_path / "BORN",
    )
    unit = rotated(get_pmg_structure(reference.unitcell), rotation)
    force_constants = np.einsum("ab,ijbc,dc->ijad", rotation, reference.force_constants, rotation)
    primitive, matrix, force_constants = phonon_doc_force_constants(
        {
            "structure": unit,
            "supercell_matrix": reference.supercell_matrix.tolist(),
            "force_constants": force_constants,
        }
    )
    return reference, unit, primitive, matrix, force_constants


def test_born_file_gives_lo_to_splitting(shared_dir, tmp_path):
    """NaCl (DFT): no splitting at Gamma without Born charges, phonopy's LO with them."""
    reference, unit, primitive, matrix, force_constants = _dft_case(
        shared_dir, "NaCl", np.eye(3), tmp_path
    )
    assert len(unit) == 8  # the conventional cell of the data
    nac = read_born(tmp_path / "BORN", unit)
    assert np.array(nac["born"]).shape == (8, 3, 3)
    mapped = primitive_nac_params(unit, nac)
    assert np.array(mapped["born"]).shape == (2, 3, 3)

    without = phonon_spectrum(make_phonopy(primitive, matrix), force_constants)
    with_nac = phonon_spectrum(make_phonopy(primitive, matrix, nac_params=mapped), force_constants)
    gamma, gamma_nac = without.labelled_frequencies["Gamma"], with_nac.labelled_frequencies["Gamma"]
    assert max(gamma) - gamma[3] < 1e-6  # TO = LO without NAC
    assert max(gamma_nac) - gamma_nac[3] > 2.0  # LO-TO splitting, THz
    reference.nac_params = {**reference.nac_params, "factor": mapped.get("factor", 14.39965)}
    reference.run_qpoints([[0, 0, 0]], nac_q_direction=[0.5, 0.0, 0.5])
    np.testing.assert_allclose(gamma_nac, reference.qpoints.frequencies[0], atol=1e-3)
    # away from Gamma NAC changes the bands too, and the DOS
    assert not np.allclose(with_nac.band_structure.bands, without.band_structure.bands)


def test_born_charges_follow_a_rotated_anisotropic_crystal(shared_dir, tmp_path):
    """SnO2 (rutile, DFT) given in a rotated frame: tdphonon's primitive cell has phonopy's
    direction-dependent LO frequencies in every direction."""
    reference, unit, primitive, matrix, force_constants = _dft_case(
        shared_dir, "SnO2", ROTATION, tmp_path
    )
    mapping = map_to_standard_primitive(unit)
    nac = primitive_nac_params(unit, read_born(tmp_path / "BORN", unit))
    ours = make_phonopy(primitive, matrix, nac_params={**nac, "factor": 14.4})
    ours.force_constants = force_constants
    reference.nac_params = {**reference.nac_params, "factor": 14.4}
    for direction in ([1, 0, 0], [0, 0, 1], [0.3, -0.5, 0.8]):
        direction = np.asarray(direction, dtype=float)  # Cartesian, frame of the data
        reference.run_qpoints([[0, 0, 0]], nac_q_direction=reference.primitive.cell @ direction)
        ours_direction = mapping.rotation @ ROTATION @ direction
        ours.run_qpoints([[0, 0, 0]], nac_q_direction=ours.primitive.cell @ ours_direction)
        np.testing.assert_allclose(
            ours.qpoints.frequencies, reference.qpoints.frequencies, atol=1e-4
        )


def test_bad_born_file_is_one_line_error(tmp_path):
    path = tmp_path / "BORN"
    path.write_text("14.4\n1 0 0\n")
    with pytest.raises(StructureError, match="cannot read Born effective charges"):
        read_born(path, nial())
    with pytest.raises(StructureError, match="not found"):
        read_born(tmp_path / "missing", nial())


def test_born_reaches_the_documents(tmp_path, monkeypatch, capsys):
    """tdphonon run: without --born, a note in the table, the JSON and the plot; with it,
    LO-TO splitting in the harmonic and the SSCHA bands (EMT NiAl: two elements)."""
    monkeypatch.setenv("TDPHONON_STORE_DIR", str(tmp_path / "store"))
    structure = tmp_path / "NiAl.cif"
    nial().to(filename=str(structure))
    (tmp_path / "BORN").write_text(NIAL_BORN)
    common = [
        "run", str(structure), "--model", "emt", "-T", "300", "--no-relax",
        "--supercell", "2", "2", "2", "--statistics", "classical", "--tolerance", "0.5",
        "--max-snapshots", "64", "--quiet",
    ]  # fmt: skip
    assert main([*common, "--json", str(tmp_path / "plain.json"), "--plots", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "supercell: 16 atoms" in out
    assert "NAC: none: the potential gives no Born effective charges" in out
    assert "min f: lowest frequency" in out and "pocket" in out
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert plain["nac"].startswith("none") and "--born" in plain["nac"]
    assert plain["supercell"]["n_atoms"] == 16
    assert "acoustic branches" in plain["imaginary_modes_rule"]
    for entry in [plain["harmonic"], *plain["results"]]:
        assert entry["min_frequency"] <= entry["min_frequency_excluding_acoustic_pockets"]
        assert isinstance(entry["acoustic_pockets"], list)
    assert (tmp_path / "AlNi_bands.png").stat().st_size > 10_000

    code = main(
        [
            *common,
            "--born",
            str(tmp_path / "BORN"),
            "--json",
            str(tmp_path / "nac.json"),
            "--no-plots",
        ]
    )
    assert code == 0
    assert "NAC:" not in capsys.readouterr().out
    nac = json.loads((tmp_path / "nac.json").read_text())
    assert nac["nac"].startswith("Born effective charges given")
    for with_nac, without in [
        (nac["harmonic"], plain["harmonic"]),
        (nac["results"][0], plain["results"][0]),
    ]:
        gamma, gamma_plain = with_nac["frequencies"]["Gamma"], without["frequencies"]["Gamma"]
        assert max(gamma_plain) - gamma_plain[3] < 1e-3  # no splitting without
        assert max(gamma) - gamma[3] > 0.5  # LO above TO with the Born charges


def test_born_needs_one_structure(tmp_path, capsys):
    (tmp_path / "BORN").write_text(NIAL_BORN)
    folder = tmp_path / "structures"
    folder.mkdir()
    nial().to(filename=str(folder / "NiAl.cif"))
    nial().to(filename=str(folder / "NiAl2.cif"))
    argv = ["submit", "--model", "emt", "--born", str(tmp_path / "BORN"), "--dry-run", "-q"]
    assert main([*argv, str(folder / "NiAl.cif")]) == 0
    assert main([*argv, str(folder)]) == 2
    assert "--born belongs to one crystal" in capsys.readouterr().err


def test_born_reaches_the_conductivity_jobs():
    from jobflow import OutputReference

    from tdphonon.flows import SSCHAMaker
    from tdphonon.flows.conductivity import SSCHAConductivityMaker

    with_born = SSCHAMaker(model="emt", relax_maker=None, supercell_matrix=[2, 2, 2])
    with_born.born = read_born_text(NIAL_BORN, nial())
    flow = SSCHAConductivityMaker(sscha_maker=with_born).make(nial(), [300.0])
    jobs = {job.name: job for job, _ in flow.iterflow()}
    assert isinstance(
        jobs["sscha 300 K iteration 1"].function_kwargs["harmonic"].nac_params, OutputReference
    )
    kappa = [jobs["kappa harmonic"], jobs["kappa renormalized 300 K"]]
    assert kappa and all(
        isinstance(job.function_kwargs["born_charges"], OutputReference) for job in kappa
    )
    assert np.array(jobs["harmonic"].function_kwargs["nac_params"]["born"]).shape == (2, 3, 3)


def read_born_text(text: str, structure: Structure) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "BORN"
        path.write_text(text)
        return read_born(path, structure)
