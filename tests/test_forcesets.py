"""Readers of DFT phonon force sets, checked against phonopy / phono3py / ase on the shared data."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from tdphonon.forcesets import (
    ForceSet,
    ForceSetError,
    read_extxyz,
    read_force_sets,
    read_phono3py,
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
