"""Readers of DFT phonon force sets, checked against phonopy / phono3py / ase on the shared data."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tdphonon.forcesets import (
    ForceSet,
    ForceSetError,
    iter_force_sets,
    read_extxyz,
    read_force_sets,
    read_phono3py,
    read_phonondb,
    read_phonopy,
    split_by_compound,
    write_extxyz,
)
from tdphonon.query import read_jobstore


@pytest.fixture(scope="module")
def data(shared_dir):
    return shared_dir / "data"


@pytest.fixture(scope="module")
def nacl(data):
    return read_phonopy(data / "phonon-forcesets" / "NaCl" / "phonopy_params.yaml.xz")


def test_phonopy_params_matches_phonopy(data, nacl):
    import phonopy

    path = data / "phonon-forcesets" / "NaCl" / "phonopy_params.yaml.xz"
    ph = phonopy.load(path, produce_fc=False, log_level=0)
    assert nacl.name == "NaCl"
    assert len(nacl) == len(ph.dataset["first_atoms"]) == 2
    assert nacl.n_energies == 0 and all(e is None for e in nacl.energies)  # none invented
    assert all(s is None for s in nacl.stresses)
    for atoms, forces, disp, sc in zip(
        nacl.supercells,
        nacl.forces,
        ph.dataset["first_atoms"],
        ph.supercells_with_displacements,
        strict=True,
    ):
        np.testing.assert_allclose(forces, disp["forces"])
        np.testing.assert_allclose(atoms.positions, sc.positions, atol=1e-10)
        assert atoms.get_chemical_symbols() == list(sc.symbols)


def test_phonopy_disp_force_sets_round_trip(tmp_path, data, nacl):
    import phonopy
    from phonopy.file_IO import write_FORCE_SETS

    ph = phonopy.load(
        data / "phonon-forcesets" / "NaCl" / "phonopy_params.yaml.xz",
        produce_fc=False,
        log_level=0,
    )
    ph.save(tmp_path / "phonopy_disp.yaml", settings={"force_sets": False})
    write_FORCE_SETS(ph.dataset, filename=str(tmp_path / "FORCE_SETS"))
    back = read_phonopy(tmp_path / "phonopy_disp.yaml")
    assert back.name == tmp_path.name
    for a, b in zip(back.forces, nacl.forces, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # without FORCE_SETS: a clear error, not an empty set
    (tmp_path / "FORCE_SETS").unlink()
    with pytest.raises(ForceSetError, match="no forces"):
        read_phonopy(tmp_path / "phonopy_disp.yaml")


def test_phono3py_random_sets_keep_energies_where_present(data):
    sets = read_phono3py(data / "phono3py" / "phono3py_params_MgO-222rd-444rd.yaml.xz")
    fc3, fc2 = sets
    assert fc3.name == "MgO-222rd-444rd" and fc2.name == "MgO-222rd-444rd-fc2"
    assert len(fc3) == 100 and len(fc3.reference) == 64 and fc3.is_random
    assert fc3.n_energies == 100  # the fc3 set has supercell energies
    assert len(fc2) == 4 and len(fc2.reference) == 512 and fc2.n_energies == 0
    import phono3py

    ph3 = phono3py.load(
        data / "phono3py" / "phono3py_params_MgO-222rd-444rd.yaml.xz",
        produce_fc=False,
        log_level=0,
    )
    np.testing.assert_allclose(fc3.energies, ph3.dataset["supercell_energies"])
    np.testing.assert_allclose(
        fc3.supercells[3].positions - fc3.reference.positions, ph3.dataset["displacements"][3]
    )


def test_phono3py_disp_and_forces_fc3(data):
    (si,) = read_phono3py(
        data / "phono3py" / "phono3py_si_pbesol.yaml",
        forces_fc3=data / "phono3py" / "FORCES_FC3_si_pbesol",
    )
    assert len(si) == 111 and len(si.harmonic_indices) == 1 and not si.is_random
    # second displacements move two atoms
    moved = np.linalg.norm(si.supercells[5].positions - si.reference.positions, axis=1)
    assert np.count_nonzero(moved > 1e-8) == 2
    # the FORCES_FC3 next to it is found by name
    assert len(read_phono3py(data / "phono3py" / "phono3py_si_pbesol.yaml")[0]) == 111


def test_extxyz_round_trip_mixed_labels(tmp_path, data):
    (rd, _) = read_phono3py(data / "phono3py" / "NaCl-rd__phono3py_params_NaCl.yaml.xz")
    rd.energies[1] = None  # mixed: one structure without an energy
    rd.stresses[2] = np.diag([0.01, 0.02, 0.03])
    rd.reference_forces = np.zeros((len(rd.reference), 3))
    rd.reference_energy = -200.0
    path = write_extxyz(rd, tmp_path / "nacl.xyz")
    back = read_extxyz(path)
    assert back.name == rd.name == "NaCl-rd"
    assert len(back) == len(rd)
    assert back.energies[1] is None and back.energies[0] == pytest.approx(rd.energies[0])
    np.testing.assert_allclose(back.stresses[2], np.diag([0.01, 0.02, 0.03]))
    assert back.stresses[0] is None
    assert back.reference_energy == pytest.approx(-200.0)
    for a, b in zip(back.forces, rd.forces, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8)
    np.testing.assert_allclose(back.reference.positions, rd.reference.positions, atol=1e-8)


def test_read_force_sets_folders(data):
    sets = read_force_sets([data / "phonon-forcesets"])
    assert len(sets) == 22
    assert len({s.name for s in sets}) == 22
    assert all(s.n_energies == 0 for s in sets)


def test_errors(tmp_path, nacl):
    with pytest.raises(FileNotFoundError):
        read_force_sets([tmp_path / "missing"])
    bad = tmp_path / "phonopy_params.yaml"
    bad.write_text("this: [is not, a phonopy file\n")
    with pytest.raises(ForceSetError, match="cannot read"):
        read_phonopy(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ForceSetError, match="no force-set files"):
        read_force_sets([tmp_path / "empty"])
    fields = dict(vars(nacl))
    with pytest.raises(ForceSetError, match="shape"):
        ForceSet(**{**fields, "forces": [f[:-1] for f in nacl.forces]})
    with pytest.raises(ForceSetError, match="no labelled supercells"):
        ForceSet(
            **{
                **fields,
                "supercells": [],
                "forces": [],
                "energies": [],
                "stresses": [],
                "harmonic_indices": [],
            }
        )


def test_split_by_compound(data):
    sets = read_force_sets([data / "phonon-forcesets"])
    train, val = split_by_compound(sets, fraction=0.25, seed=3)
    _, val2 = split_by_compound(sets, fraction=0.25, seed=3)
    assert [s.name for s in val] == [s.name for s in val2] and len(val) == 6
    assert not {s.name for s in train} & {s.name for s in val}
    train, val = split_by_compound(sets, ["NaCl", "MgO"])
    assert sorted(s.name for s in val) == ["MgO", "NaCl"] and len(train) == 20
    with pytest.raises(ForceSetError, match="not among"):
        split_by_compound(sets, ["Unobtainium"])


def _store_atomate2_phonon(store, force_set, flow_uuid):
    """Write what atomate2's PhononMaker leaves in a JobStore: static jobs + PhononBSDOSDoc."""
    from pymatgen.io.ase import AseAtomsAdaptor

    docs, uuids = [], []
    for atoms, forces in zip(force_set.supercells, force_set.forces, strict=True):
        job_uuid = str(uuid.uuid4())
        uuids.append(job_uuid)
        structure = AseAtomsAdaptor.get_structure(atoms)
        docs.append(
            {
                "uuid": job_uuid,
                "index": 1,
                "hosts": [flow_uuid],
                "name": "static",
                "output": {
                    "@module": "atomate2.forcefields.schemas",
                    "@class": "ForceFieldTaskDocument",
                    "output": {
                        "structure": structure.as_dict(),
                        "forces": forces.tolist(),
                        "energy": None,
                    },
                },
            }
        )
    structure = AseAtomsAdaptor.get_structure(force_set.unitcell)
    docs.append(
        {
            "uuid": str(uuid.uuid4()),
            "index": 1,
            "hosts": [flow_uuid],
            "name": "generate_frequencies_eigenvectors",
            "output": {
                "@module": "atomate2.common.schemas.phonons",
                "@class": "PhononBSDOSDoc",
                "structure": structure.as_dict(),
                "formula_pretty": structure.composition.reduced_formula,
                "supercell_matrix": force_set.supercell_matrix.tolist(),
                "primitive_matrix": force_set.primitive_matrix.tolist(),
                "uuids": {"displacements_uuids": uuids},
            },
        }
    )
    store.connect()
    store.docs_store.update(docs, key=["uuid", "index"])


def test_jobstore_round_trip(tmp_path, nacl):
    from tdphonon.evaluation import dft_frequencies
    from tdphonon.stores import embedded_store

    store = embedded_store(tmp_path / "store")
    flow_uuid = str(uuid.uuid4())
    _store_atomate2_phonon(store, nacl, flow_uuid)
    (back,) = read_jobstore(store, flow_uuid=flow_uuid)
    assert back.name == "NaCl" and len(back) == 2 and not back.is_random
    assert back.n_energies == 0
    for a, b in zip(back.forces, nacl.forces, strict=True):
        np.testing.assert_allclose(a, b)
    # the reconstructed set gives the same DFT phonons as the phonopy file
    f_back, _, _ = dft_frequencies(back)
    f_ref, _, _ = dft_frequencies(nacl)
    np.testing.assert_allclose(f_back, f_ref, atol=1e-5)
    assert read_jobstore(store, formula="NaCl")[0].name == "NaCl"
    with pytest.raises(ForceSetError, match="no atomate2 phonon document"):
        read_jobstore(store, formula="MgO")


# ---------------------------------------------------------------------------------------------
# phonondb archives (../shared/data/phonondb)
# ---------------------------------------------------------------------------------------------

#: Na2S (polar, BORN, F-centred: PRIMITIVE_AXIS), Sc2S3 (no BORN), NaBrO3 (BORN, no
#: PRIMITIVE_AXIS: the unit cell is primitive).
PHONONDB_ARCHIVES = (
    "materials-id-648-na2s-fm-3m-225.tar.lzma",
    "materials-id-401-sc2s3-fddd-70.tar.lzma",
    "materials-id-23339-nabro3-p2-13-198.tar.lzma",
)


@pytest.fixture(scope="module")
def phonondb(data):
    import csv

    folder = data / "phonondb"
    if not (folder / "index.csv").is_file():
        pytest.skip(f"phonondb data not found at {folder} (set TDPHONON_SHARED)")
    index = {row["archive"]: row for row in csv.DictReader((folder / "index.csv").open())}
    return folder / "archives", index


def _extract(archive, where):
    import tarfile

    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    (folder,) = where.iterdir()
    return folder


@pytest.mark.parametrize("archive", PHONONDB_ARCHIVES)
def test_phonondb_archive_matches_index_phonopy_and_its_folder(archive, phonondb, tmp_path):
    from fractions import Fraction

    import phonopy

    archives, index = phonondb
    row = index[archive]
    fs = read_phonondb(archives / archive)
    assert fs.name == f"{row['mpid']}-{row['formula']}"
    assert len(fs.reference) == int(row["nat_super"]) and len(fs) == int(row["n_disp"])
    assert len(fs.unitcell) == int(row["nat_unit"])
    assert (fs.nac_params is not None) == (row["nac"] == "1")
    assert fs.n_energies == 0 and fs.n_stresses == 0  # forces only, none invented
    provenance = fs.metadata["provenance"]
    assert provenance["database"] == "phonondb" and provenance["release"] == "2018-04-17"
    assert provenance["functional"] == "PBEsol" and provenance["license"] == "CC-BY-4.0"
    assert "Togo" in provenance["citation"] and provenance["mp_id"] == row["mpid"]
    assert fs.summary()["provenance"]["mp_id"] == row["mpid"]

    # the unpacked folder gives the same ForceSet
    folder = _extract(archives / archive, tmp_path)
    same = read_phonondb(folder)
    assert same.name == fs.name and same.source == str(folder)
    np.testing.assert_array_equal(same.supercell_matrix, fs.supercell_matrix)
    np.testing.assert_allclose(same.primitive_matrix, fs.primitive_matrix)
    np.testing.assert_allclose(same.reference.positions, fs.reference.positions)
    for a, b in zip(same.forces, fs.forces, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (same.nac_params is None) == (fs.nac_params is None)

    # ... and the same as phonopy.load of the unpacked files (the README's recipe)
    conf = dict(
        (k.strip(), v.strip())
        for k, v in (line.split("=") for line in (folder / "phonopy.conf").read_text().splitlines())
    )
    born = folder / "BORN"
    ph = phonopy.load(
        unitcell_filename=folder / "POSCAR-unitcell",
        supercell_matrix=[int(x) for x in conf["DIM"].split()],
        primitive_matrix=(
            np.array([float(Fraction(x)) for x in conf["PRIMITIVE_AXIS"].split()]).reshape(3, 3)
            if "PRIMITIVE_AXIS" in conf
            else np.eye(3)
        ),
        force_sets_filename=folder / "FORCE_SETS",
        born_filename=born if born.is_file() else None,
        is_nac=born.is_file(),
        produce_fc=False,
        log_level=0,
    )
    np.testing.assert_allclose(ph.supercell.positions, fs.reference.positions, atol=1e-10)
    np.testing.assert_allclose(ph.primitive_matrix, fs.primitive_matrix)
    for entry, atoms, forces in zip(
        ph.dataset["first_atoms"], fs.supercells, fs.forces, strict=True
    ):
        np.testing.assert_allclose(forces, entry["forces"])
        d = atoms.positions - fs.reference.positions
        np.testing.assert_allclose(d[entry["number"]], entry["displacement"], atol=1e-10)
    if born.is_file():
        for key in ("born", "dielectric", "factor"):
            np.testing.assert_allclose(fs.nac_params[key], ph.nac_params[key])


def test_phonondb_nac_gives_lo_to_splitting(phonondb):
    """Na2S is polar: with BORN the frequencies near Gamma change, and at Gamma approached
    along a direction the LO mode splits from the TO modes; without it, no splitting."""
    import dataclasses

    from tdphonon.evaluation import _phonopy, dft_frequencies

    archives, _ = phonondb
    fs = read_phonondb(archives / PHONONDB_ARCHIVES[0])
    assert fs.nac_params is not None
    assert np.abs(fs.nac_params["born"]).max() > 0.5
    bare = dataclasses.replace(fs, nac_params=None, metadata={})

    def gamma(force_set, direction):
        phonon = _phonopy(force_set)
        phonon.dataset = {
            "natom": len(force_set.reference),
            "first_atoms": [
                {**e, "forces": f}
                for e, f in zip(
                    force_set.dataset["first_atoms"], force_set.harmonic_forces(), strict=True
                )
            ],
        }
        phonon.produce_force_constants()
        phonon.run_qpoints([[0, 0, 0]], nac_q_direction=direction)
        return phonon.qpoints.frequencies[0]

    with_nac, without = gamma(fs, [1, 0, 0]), gamma(bare, [1, 0, 0])
    assert with_nac.max() > without.max() + 0.5  # the LO mode, THz
    np.testing.assert_allclose(np.sort(gamma(bare, [0, 0, 1])), np.sort(without), atol=1e-6)
    # the evaluation protocol's mesh frequencies use it too
    f_nac, w, _ = dft_frequencies(fs)
    f_bare, w_bare, _ = dft_frequencies(bare)
    np.testing.assert_array_equal(w, w_bare)
    assert np.abs(f_nac - f_bare).max() > 0.1


def _broken_archives(archive, where):
    """A truncated copy, an archive without FORCE_SETS, one with an unparsable phonopy.conf."""
    import io
    import tarfile

    data = archive.read_bytes()
    truncated = where / "materials-id-1-truncated.tar.lzma"
    truncated.write_bytes(data[: len(data) // 2])
    made = [truncated]
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    for name, drop, change in (
        ("materials-id-2-no-force-sets.tar.lzma", "FORCE_SETS", None),
        ("materials-id-3-bad-conf.tar.lzma", None, "phonopy.conf"),
    ):
        path = where / name
        with tarfile.open(path, "w:xz") as out:
            for member, content in members:
                base = member.name.rsplit("/", 1)[-1]
                if base == drop:
                    continue
                if base == change:
                    content = b"DIM = 2 2 two\n"
                    member.size = len(content)
                out.addfile(member, None if content is None else io.BytesIO(content))
        made.append(path)
    return made


def test_broken_phonondb_archive_is_a_one_line_error_naming_it(phonondb, tmp_path):
    archives, _ = phonondb
    truncated, no_forces, bad_conf = _broken_archives(archives / PHONONDB_ARCHIVES[0], tmp_path)
    for path, why in (
        (truncated, "broken phonondb archive"),
        (no_forces, "no FORCE_SETS"),
        (bad_conf, "DIM"),
    ):
        with pytest.raises(ForceSetError) as err:
            read_phonondb(path)
        message = str(err.value)
        assert len(message.splitlines()) == 1 and str(path) in message and why in message
        # alone on the command line: the same error
        with pytest.raises(ForceSetError, match=why):
            read_force_sets([path])
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(ForceSetError, match=r"no POSCAR-unitcell, phonopy\.conf, FORCE_SETS"):
        read_phonondb(tmp_path / "empty-folder")


def test_folder_of_phonondb_archives_skips_broken_ones(phonondb, tmp_path, caplog):
    import shutil

    archives, _ = phonondb
    good = tmp_path / PHONONDB_ARCHIVES[1]
    shutil.copy(archives / PHONONDB_ARCHIVES[1], good)
    (broken,) = _broken_archives(archives / PHONONDB_ARCHIVES[0], tmp_path)[:1]
    for extra in tmp_path.glob("materials-id-[23]-*"):
        extra.unlink()
    unpacked = _extract(archives / PHONONDB_ARCHIVES[2], tmp_path / "unpacked")

    stream = iter_force_sets([tmp_path])
    assert iter(stream) is stream  # lazy: read one at a time
    with caplog.at_level("WARNING", logger="tdphonon.forcesets"):
        sets = read_force_sets([tmp_path])
    assert [s.name for s in sets] == ["mp-401-S3Sc2", "mp-23339-BrNaO3"]  # sorted paths
    assert sets[1].source == str(unpacked)
    assert len(sets.skipped) == 1 and sets.skipped[0][0] == str(broken)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(broken.name in w and "skipped" in w for w in warned)
    assert all(len(w.splitlines()) == 1 for w in warned)


def test_cli_evaluate_reads_phonondb_archives(phonondb, m3gnet_path, tmp_path, capsys):
    import json
    import shutil

    from tdphonon.cli import main

    archives, _ = phonondb
    si = "materials-id-149-si-fd-3m-227.tar.lzma"  # 1 displacement, 64 atoms, BORN
    shutil.copy(archives / si, tmp_path / si)
    (tmp_path / "materials-id-0-broken.tar.lzma").write_bytes(b"not an archive")
    out = tmp_path / "eval.json"
    code = main(["evaluate", str(tmp_path), "--model", str(m3gnet_path), "--json", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert [c["name"] for c in doc["compounds"]] == ["mp-149-Si"]
    assert doc["skipped"][0]["path"].endswith("materials-id-0-broken.tar.lzma")
    assert "Born charges" in doc["protocol"]["nac"]
    # a broken archive alone: a one-line error naming it, no model loaded
    broken = str(tmp_path / "materials-id-0-broken.tar.lzma")
    assert main(["evaluate", broken, "--model", "emt", "-q"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "materials-id-0-broken.tar.lzma" in error
