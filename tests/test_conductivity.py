"""Lattice thermal conductivity: phono3py path vs DFT references, fc3 methods, flows, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from tdphonon.conductivity import (
    ConductivitySettings,
    ThermalConductivity,
    compute_fc3,
    dft_kappa,
    load_phono3py,
)
from tdphonon.potentials import get_calculator
from tdphonon.structures import standard_primitive

FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def fcc_al() -> Structure:
    return standard_primitive(Structure(Lattice.cubic(4.05), ["Al"] * 4, FCC))


def bcc_cu() -> Structure:
    return Structure(Lattice.cubic(2.87), ["Cu"] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def phono3py_dir(shared_dir):
    path = shared_dir / "data" / "phono3py"
    if not (path / "FORCES_FC3_si_pbesol").is_file():
        pytest.skip(f"phono3py DFT data not found in {path}")
    return path


# -- DFT force sets: the kappa path reproduces phono3py ------------------------------------------


def test_si_dft_reproduces_phono3py_reference(phono3py_dir):
    """Si PBEsol, 11x11x11 RTA: kappa, frequencies, linewidths of phono3py's reference hdf5."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(phono3py_dir / "kappa-m111111_si_pbesol.hdf5") as reference:
        mesh = tuple(int(n) for n in reference["mesh"][:])
        temperatures = reference["temperature"][:]
        kappa, frequencies = reference["kappa"][:], reference["frequency"][:]
        gamma, mode_kappa = reference["gamma"][:], reference["mode_kappa"][:]
    result = dft_kappa(
        phono3py_dir / "phono3py_si_pbesol.yaml",
        temperatures,
        ConductivitySettings(mesh=mesh),
        forces=phono3py_dir / "FORCES_FC3_si_pbesol",
    )
    assert result.n_fc3_supercells == 111 and not result.nac
    kappa_result = result.result
    assert all(reason is None for reason in kappa_result.reasons)
    # 841, 197, 111, 78, 61 W/m-K from 100 to 500 K
    np.testing.assert_allclose(kappa_result.kappa[:, :3], kappa[:, :3], rtol=1e-3)
    np.testing.assert_allclose(kappa_result.kappa[:, 3:], 0, atol=1e-6)
    np.testing.assert_allclose(kappa_result.frequencies, frequencies, atol=1e-4)
    np.testing.assert_allclose(kappa_result.gammas, gamma, rtol=0.06, atol=2e-4)
    np.testing.assert_allclose(
        kappa_result.mode_kappa, mode_kappa, atol=5e-3 * np.abs(mode_kappa).max()
    )
    # mode kappa sums to kappa
    total = kappa_result.mode_kappa.sum(axis=(1, 2)) / kappa_result.weights.sum()
    np.testing.assert_allclose(total, kappa_result.kappa, rtol=1e-8, atol=1e-8)


def test_nacl_dft_with_nac_matches_phono3py(phono3py_dir):
    """NaCl (NAC): same kappa as phono3py run directly with the same settings."""
    import phono3py

    path = phono3py_dir / "phono3py_params_NaCl222.yaml.xz"
    result = dft_kappa(path, [100.0, 300.0], ConductivitySettings(mesh=(5, 5, 5)))
    assert result.nac and result.formula == "NaCl" and result.n_fc3_supercells == 146
    direct = phono3py.load(path, produce_fc=True, log_level=0)
    direct.mesh_numbers = [5, 5, 5]
    direct.init_phph_interaction()
    direct.run_thermal_conductivity(temperatures=[100.0, 300.0])
    np.testing.assert_allclose(
        result.result.kappa, direct.thermal_conductivity.kappa[0], rtol=1e-8, atol=1e-10
    )
    # physical ballpark of NaCl (experiment about 7 W/m-K at 300 K) and ~1/T
    assert 4 < result.result.kappa[1, 0] < 12
    assert 2.0 < result.result.kappa[0, 0] / result.result.kappa[1, 0] < 3.5
    # isotope scattering (35Cl/37Cl) lowers kappa; the LBTE solution is phono3py's too
    rta = result.result.kappa[1, 0]
    isotope = dft_kappa(path, [300.0], ConductivitySettings(mesh=(5, 5, 5), isotope=True))
    assert 0.8 * rta < isotope.result.kappa[0, 0] < 0.97 * rta
    lbte = dft_kappa(path, [300.0], ConductivitySettings(mesh=(5, 5, 5), method="lbte"))
    direct.run_thermal_conductivity(is_LBTE=True, temperatures=[300.0])
    np.testing.assert_allclose(
        lbte.result.kappa, direct.thermal_conductivity.kappa[0], rtol=1e-8, atol=1e-10
    )
    assert rta < lbte.result.kappa[0, 0] < 1.3 * rta


def test_load_phono3py_errors(phono3py_dir, tmp_path):
    with pytest.raises(ValueError, match="no forces"):
        load_phono3py(phono3py_dir / "phono3py_si_pbesol.yaml")
    with pytest.raises(FileNotFoundError):
        load_phono3py(tmp_path / "missing.yaml")


# -- fc3 from a potential: random displacements + symfc vs finite differences --------------------


@pytest.fixture(scope="module")
def al_fc3():
    calculator = get_calculator("emt")
    structure = fcc_al()
    matrix = [[-2, 2, 2], [2, -2, 2], [2, 2, -2]]  # 32-atom conventional 2x2x2
    finite = compute_fc3(structure, calculator, supercell_matrix=matrix, method="finite")
    random = compute_fc3(
        structure, calculator, supercell_matrix=matrix, method="random", number_of_snapshots=10
    )  # 10 +/- pairs
    return structure, finite, random


def test_fc3_random_symfc_agrees_with_finite_differences(al_fc3):
    structure, finite, random = al_fc3
    assert finite.n_supercells == 37 and finite.n_force_evaluations == 38
    assert random.n_supercells == 20 and random.plusminus
    assert finite.fc3.shape == random.fc3.shape == (1, 32, 32, 3, 3, 3)
    difference = np.linalg.norm(random.fc3 - finite.fc3) / np.linalg.norm(finite.fc3)
    assert difference < 0.03
    # kappa of the two fc3 with the same (finite-difference) fc2
    settings = ConductivitySettings(mesh=(6, 6, 6))
    kappas = [
        ThermalConductivity.from_force_constants(structure, fc3, settings=settings).run(
            finite.fc2, [300.0]
        )
        for fc3 in (finite, random)
    ]
    assert kappas[0].kappa[0, 0] == pytest.approx(kappas[1].kappa[0, 0], rel=0.03)
    assert kappas[0].kappa[0, 0] > 1
    # the fc2 fitted from the random fc3 supercells agrees with the finite-difference one
    fc2_difference = np.linalg.norm(random.fc2 - finite.fc2) / np.linalg.norm(finite.fc2)
    assert fc2_difference < 0.02


def test_fc3_auto_snapshots_and_errors(al_fc3):
    structure, finite, _ = al_fc3
    calculator = get_calculator("emt")
    auto = compute_fc3(structure, calculator, supercell_matrix=[[-2, 2, 2], [2, -2, 2], [2, 2, -2]])
    assert 1 <= auto.n_supercells < finite.n_supercells
    difference = np.linalg.norm(auto.fc3 - finite.fc3) / np.linalg.norm(finite.fc3)
    assert difference < 0.05
    with pytest.raises(ValueError, match="fc3 method"):
        compute_fc3(structure, calculator, method="magic")
    # B2 NiAl: the symfc fc2 + fc3 bases of the 54-atom supercell need > 4 supercells
    nial = Structure(Lattice.cubic(2.88), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match=r"2 random supercells are too few .*at least 5"):
        compute_fc3(
            nial, calculator, supercell_matrix=[3, 3, 3], number_of_snapshots=2, plusminus=False
        )
    # symfc fails inside its basis construction for the 8-atom 2x2x2 primitive supercell
    with pytest.raises(ValueError, match=r"8-atom fc3 supercell.*larger fc3 supercell"):
        compute_fc3(structure, calculator, supercell_matrix=[2, 2, 2])
    with pytest.raises(ValueError, match="q-mesh"):
        ConductivitySettings(mesh=(4, 0, 4))
    with pytest.raises(ValueError, match="kappa method"):
        ConductivitySettings(method="bte")


def test_imaginary_modes_give_not_defined(al_fc3):
    """bcc Cu is dynamically unstable with EMT: kappa not defined, with the reason."""
    calculator = get_calculator("emt")
    structure = standard_primitive(bcc_cu())
    fc3 = compute_fc3(structure, calculator, supercell_matrix=[3, 3, 3])
    kappa = ThermalConductivity.from_force_constants(
        structure, fc3, settings=ConductivitySettings(mesh=(5, 5, 5))
    )
    result = kappa.run(fc3.fc2, [300.0, 600.0])
    assert result.min_frequency < -0.5
    assert result.defined == [False, False]
    assert all("imaginary" in reason and "THz" in reason for reason in result.reasons)
    assert result.kappa_lists() == [None, None] and result.mode_kappa is None
    with pytest.raises(ValueError, match="does not fit"):
        kappa.run(np.zeros((2, 5, 3, 3)), [300.0])
    with pytest.raises(ValueError, match=r"above 0|> 0"):
        kappa.run(fc3.fc2, [0.0])


# -- flows -------------------------------------------------------------------------------------


def test_flow_unstable_harmonic_keeps_renormalized(tmp_path):
    """bcc Cu (EMT) at 1500 K: harmonic kappa not defined, the SSCHA-stabilised one is."""
    from tdphonon.flows.conductivity import (
        SSCHAConductivityMaker,
        ThermalConductivityMaker,
        run_conductivity_flow,
    )
    from tdphonon.flows.sscha import SSCHAMaker
    from tdphonon.stores import embedded_store

    maker = SSCHAConductivityMaker(
        sscha_maker=SSCHAMaker(
            model="emt",
            relax_maker=None,
            supercell_matrix=[[3, 0, 0], [0, 3, 0], [0, 0, 3]],
            sscha_settings={
                "frequency_tolerance": 0.2,
                "max_snapshots": 64,
                "statistics": "classical",
            },
        ),
        conductivity_maker=ThermalConductivityMaker(mesh=(5, 5, 5), fc3_supercell_matrix=[3, 3, 3]),
    )
    harmonic, sscha, doc = run_conductivity_flow(  # 3x3x3 of the primitive cell: 27 atoms
        maker.make(standard_primitive(bcc_cu()), [1500.0]), embedded_store(tmp_path)
    )
    assert harmonic["has_imaginary_modes"] and not sscha[0]["has_imaginary_modes"]
    assert doc["kappa_harmonic"] == [None]
    assert "imaginary" in doc["harmonic_reasons"][0]
    assert doc["harmonic_min_frequency"] < 0
    kappa = doc["kappa_renormalized"][0]
    assert len(kappa) == 6 and kappa[0] > 0 and doc["renormalized_reasons"] == [None]
    assert doc["ratio"] == [None] and doc["ratio_trace"] == [None]
    assert doc["n_force_evaluations"] == (
        doc["n_fc3_supercells"]
        + 1
        + harmonic["n_force_evaluations"]
        + sscha[0]["n_force_evaluations"]
    )


def test_m3gnet_si_end_to_end(m3gnet_path, tmp_path):
    """M3GNet Si through SSCHA + fc3 + kappa on the embedded store (CI-sized)."""
    from tdphonon.flows.conductivity import (
        SSCHAConductivityMaker,
        ThermalConductivityMaker,
        run_conductivity_flow,
    )
    from tdphonon.flows.sscha import SSCHAMaker
    from tdphonon.stores import embedded_store, load_output

    store = embedded_store(tmp_path)
    silicon = Structure(
        Lattice.cubic(5.43), ["Si"] * 8, FCC + [[x + 0.25, y + 0.25, z + 0.25] for x, y, z in FCC]
    )
    maker = SSCHAConductivityMaker(
        sscha_maker=SSCHAMaker(
            model=str(m3gnet_path),
            device="cpu",
            # of the conventional cell given: the 16-atom 2x2x2 supercell of the primitive one
            supercell_matrix=[[0, 1, 1], [1, 0, 1], [1, 1, 0]],
            sscha_settings={"frequency_tolerance": 0.2, "max_snapshots": 32, "seed": 1},
        ),
        conductivity_maker=ThermalConductivityMaker(
            mesh=(5, 5, 5), fc3_supercell_matrix=[[0, 1, 1], [1, 0, 1], [1, 1, 0]]
        ),
    )
    flow = maker.make(silicon, [300.0])
    _, _, doc = run_conductivity_flow(flow, store)
    assert doc["formula"] == "Si" and doc["fc3_method"] == "random"
    for kappa in (doc["kappa_harmonic"][0], doc["kappa_renormalized"][0]):
        assert len(kappa) == 6 and 1 < kappa[0] < 1000
        assert kappa[0] == pytest.approx(kappa[1], rel=1e-6)  # cubic
        assert abs(kappa[3]) < 1e-6 * kappa[0]
    assert doc["ratio_trace"][0] == pytest.approx(
        doc["kappa_renormalized"][0][0] / doc["kappa_harmonic"][0][0], rel=1e-9
    )
    assert doc["n_fc3_supercells"] >= 1 and doc["n_harmonic_force_evaluations"] >= 1
    # mode-resolved data went to the data store, and sums to kappa
    kappa_doc = load_output(store, doc["kappa_uuids"]["300 K"])
    total = kappa_doc.mode_kappa.sum(axis=(1, 2)) / kappa_doc.weights.sum()
    np.testing.assert_allclose(total[0], doc["kappa_renormalized"][0], rtol=1e-8, atol=1e-8)
    raw = store.query_one({"uuid": doc["kappa_uuids"]["300 K"]}, load=False)
    assert "blob_uuid" in raw["output"]["mode_kappa"]


def test_maker_validation():
    from tdphonon.flows.conductivity import ThermalConductivityMaker

    with pytest.raises(ValueError, match="above 0 K"):
        ThermalConductivityMaker(model="emt").make(fcc_al(), [0.0])
    with pytest.raises(ValueError, match="fc3_method"):
        ThermalConductivityMaker(model="emt", fc3_method="x")  # checked when made
    with pytest.raises(ValueError, match="q-mesh"):
        ThermalConductivityMaker(model="emt", mesh=(0, 1, 1)).make(fcc_al(), [300.0])


def test_maker_without_sscha(tmp_path):
    """Standalone: harmonic kappa with the fc2 fitted from the fc3 supercells."""
    from tdphonon.flows.conductivity import ThermalConductivityMaker, run_conductivity_flow
    from tdphonon.stores import embedded_store

    flow = ThermalConductivityMaker(model="emt", mesh=(5, 5, 5), fc3_min_length=7.0).make(
        fcc_al(), [300.0, 600.0]
    )
    _, _, doc = run_conductivity_flow(flow, embedded_store(tmp_path))
    assert doc["kappa_harmonic"][0][0] > doc["kappa_harmonic"][1][0] > 0
    assert doc["kappa_renormalized"] == [None, None]
    assert doc["renormalized_reasons"][0].startswith("not computed")


# -- command line ------------------------------------------------------------------------------


def _check_json(path, n_temperatures):
    data = json.loads(path.read_text())
    assert len(data["results"]) == n_temperatures
    for entry in data["results"]:
        assert set(entry) >= {
            "temperature",
            "kappa_harmonic",
            "kappa_renormalized",
            "reason_harmonic",
            "reason_renormalized",
        }
        for kind in ("harmonic", "renormalized"):
            kappa = entry[f"kappa_{kind}"]
            assert kappa is None or (len(kappa) == 6 and all(isinstance(v, float) for v in kappa))
            assert (kappa is None) == (entry[f"reason_{kind}"] is not None)
    return data


def test_cli_dft_mode_json(phono3py_dir, tmp_path, capsys):
    from tdphonon.cli import main

    out = tmp_path / "nacl.json"
    code = main(
        [
            "kappa",
            "--phono3py",
            str(phono3py_dir / "phono3py_params_NaCl222.yaml.xz"),
            "--mesh",
            "5",
            "5",
            "5",
            "-T",
            "100",
            "300",
            "--json",
            str(out),
            "--plots",
            str(tmp_path),
        ]
    )
    assert code == 0
    data = _check_json(out, 2)
    assert data["results"][1]["kappa_harmonic"][0] > 0
    assert data["results"][1]["kappa_renormalized"] is None
    assert (tmp_path / "NaCl_kappa.png").stat().st_size > 1000
    assert "NaCl" in capsys.readouterr().out


def test_cli_potential_mode_json_and_errors(tmp_path, capsys):
    from tdphonon.cli import main

    structure = tmp_path / "Al.json"
    structure.write_text(Structure(Lattice.cubic(4.05), ["Al"] * 4, FCC).to_json())
    out = tmp_path / "al.json"
    args = ["kappa", str(structure), "--model", "emt", "-T", "300", "--mesh", "4", "4", "4"]
    args += ["--min-length", "7", "--fc3-min-length", "7", "--tolerance", "0.15", "-q"]
    args += ["--no-relax", "--json", str(out), "--plots", str(tmp_path)]
    args += ["--store", str(tmp_path / "store")]
    assert main(args) == 0
    data = _check_json(out, 1)
    assert data["results"][0]["kappa_renormalized"][0] > 0
    assert data["results"][0]["ratio"] > 0
    assert (tmp_path / "Al_kappa.png").is_file()
    capsys.readouterr()
    assert main(["kappa", "-T", "300"]) == 2
    assert "STRUCTURE" in capsys.readouterr().err
    assert main(["kappa", str(structure), "--phono3py", "x.yaml"]) == 2
    assert main(["kappa", str(structure), "--model", "emt", "-T", "0"]) == 2
    assert main(["kappa", "--phono3py", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
