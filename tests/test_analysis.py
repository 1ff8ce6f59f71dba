"""``tdphonon analyze``: table, features, trends and driver models of a real small campaign.

The campaign: five fcc metals and L1_2 Cu3Au, SSCHA with EMT at 300 and 600 K, in an
embedded store, plus two failures by fault injection (as in tests/test_campaign.py):
fcc Ni with EMT whose forces turn NaN above 0.5 eV/Å, which the 0.01 Å harmonic
displacements stay below and thermal snapshots do not (the SSCHA fails); and fcc Pt,
relaxed first, with EMT whose forces turn NaN in any cell of more than one atom (the
one-atom relaxation succeeds, the harmonic supercells fail).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import lzma
import subprocess
import sys
from functools import cache

import numpy as np
import pandas as pd
import pytest
from ase.calculators.emt import EMT
from pymatgen.core import Lattice, Structure

from tdphonon.analysis import (
    FEATURE_NAMES,
    InsufficientDataError,
    StructureFeaturizer,
    campaign_structures,
    campaign_table,
    driver_model,
    structure_features,
    trends,
)
from tdphonon.cli import main

TEMPERATURES = [300.0, 600.0]
FCC = {"Al": 4.05, "Cu": 3.61, "Ag": 4.09, "Au": 4.08, "Pd": 3.89, "Ni": 3.52, "Pt": 3.92}
COMPLETED = ["Al", "Cu", "Ag", "Au", "Pd", "Cu3Au"]
# loose settings: every compound converges in a few iterations (seconds each)
SETTINGS = {"frequency_tolerance": 0.3, "seed": 1, "initial_snapshots": 8, "max_snapshots": 64}


def fcc(element: str) -> Structure:
    a = FCC[element]
    return Structure(
        Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [element], [[0, 0, 0]]
    )


def cu3au() -> Structure:
    """L1_2 Cu3Au (Pm-3m), Au at the cube corners."""
    return Structure(
        Lattice.cubic(3.75),
        ["Au", "Cu", "Cu", "Cu"],
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )


class NaNAboveEMT(EMT):
    """EMT, except that forces above 0.5 eV/Å come out NaN (fault injection)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes or [])
        forces = self.results.get("forces")
        if np.abs(forces).max() > 0.5:
            self.results["forces"] = np.full_like(forces, np.nan)


class NaNInSupercellsEMT(EMT):
    """EMT, except that forces in cells of more than one atom come out NaN."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes or [])
        if len(self.atoms) > 1:
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)


@cache
def _faulty_calculator(model, device, batch_size):
    from tdphonon.potentials import AseCalculator

    return AseCalculator(NaNAboveEMT(), name="emt")


@cache
def _supercell_faulty_calculator(model, device, batch_size):
    from tdphonon.potentials import AseCalculator

    return AseCalculator(NaNInSupercellsEMT(), name="emt")


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """The store, with its structures by material name."""
    from tdphonon.campaign import CampaignMaker
    from tdphonon.flows import SSCHAMaker
    from tdphonon.stores import embedded_store, run_flow

    sscha = SSCHAMaker(model="emt", min_length=5.0, relax_maker=None, sscha_settings=SETTINGS)
    maker = CampaignMaker(
        sscha_maker=sscha, temperatures=TEMPERATURES, heavy_category=None, light_category=None
    )
    folder = tmp_path_factory.mktemp("analysis") / "store"
    store = embedded_store(folder)
    structures = {name: fcc(name) for name in COMPLETED[:5]}
    structures["Cu3Au"] = cu3au()
    for name, structure in structures.items():
        run_flow(maker.make(structure, name), store, ensure_success=False)
    structures["Ni"] = fcc("Ni")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tdphonon.potentials.factory.cached_calculator", _faulty_calculator)
        run_flow(maker.make(structures["Ni"], "Ni"), store, ensure_success=False)
    structures["Pt"] = fcc("Pt")
    relaxing = dataclasses.replace(maker, sscha_maker=SSCHAMaker(model="emt", min_length=5.0))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tdphonon.potentials.factory.cached_calculator", _supercell_faulty_calculator)
        run_flow(relaxing.make(structures["Pt"], "Pt"), store, ensure_success=False)
    return {"store": store, "folder": folder, "structures": structures}


@pytest.fixture(scope="module")
def table(campaign):
    """The campaign table joined with the structure features."""
    frame = campaign_table(campaign["store"])
    features = structure_features(campaign_structures(campaign["store"]))
    return frame.merge(features, left_on="id", right_index=True, how="left")


# -- the table ------------------------------------------------------------------------------------


def test_one_row_per_compound_and_temperature(table):
    assert len(table) == 8 * len(TEMPERATURES)
    assert table.groupby("material")["temperature"].apply(sorted).to_dict() == {
        name: TEMPERATURES for name in [*COMPLETED, "Ni", "Pt"]
    }
    assert table["id"].nunique() == 8
    done = table[table["material"].isin(COMPLETED)]
    assert (done["status"] == "completed").all()
    for column in ("sigma_a", "sigma_a_error", "mean_relative_shift"):
        assert np.isfinite(done[column].to_numpy(dtype=float)).all(), column
    assert ((done["sigma_a"] > 0) & (done["sigma_a"] < 1)).all()
    # anharmonicity grows with temperature (on average over the compounds: each value
    # has a statistical error of a few hundredths at these loose settings)
    mean = done.groupby("temperature")["sigma_a"].mean()
    assert mean[600.0] > mean[300.0]
    failed = table[table["material"].isin(["Ni", "Pt"])]
    assert (failed["status"] == "failed").all()
    assert failed["reason"].str.contains("NonFiniteForcesError").all()
    assert failed[["sigma_a", "mean_relative_shift"]].isna().all().all()
    reasons = failed.set_index("material")["reason"]
    assert reasons["Ni"].iloc[0].startswith("sscha at 300 K")
    assert reasons["Pt"].iloc[0].startswith("harmonic")


def test_features_of_the_crystals(campaign, table):
    structures = campaign_structures(campaign["store"])
    # Ni's from its harmonic document, Pt's from its relaxation
    assert len(structures) == 8
    by_material = table.drop_duplicates("material").set_index("material")
    numeric = [f for f in FEATURE_NAMES if by_material[f].dtype.kind == "f"]
    assert np.isfinite(by_material[numeric].to_numpy(dtype=float)).all()
    for name, structure in campaign["structures"].items():
        row = by_material.loc[name]
        if name != "Pt":  # not relaxed: the stored standard primitive cell has its density
            assert row["density"] == pytest.approx(structure.density, rel=1e-6)
        assert row["spacegroup_number"] == (221 if name == "Cu3Au" else 225)
        assert row["n_elements"] == len(structure.composition.elements)
        assert row["mean_coordination"] == 12  # fcc and L1_2: 12 nearest neighbours
        assert row["mean_atomic_mass"] == pytest.approx(
            structure.composition.weight / structure.composition.num_atoms
        )
        assert row["perovskite_derived"] == 0 and row["octahedral_site_fraction"] == 0
    assert by_material.loc["Al", "prototype"] == "A_Fm-3m"
    assert by_material.loc["Al", "spacegroup_number"] == 225
    assert by_material.loc["Cu3Au", "prototype"] == "AB3_Pm-3m"
    assert by_material.loc["Cu3Au", "spacegroup_number"] == 221
    assert by_material.loc["Cu3Au", "range_electronegativity"] == pytest.approx(2.54 - 1.90)
    a = FCC["Cu"]
    assert by_material.loc["Cu", "mean_bond_length"] == pytest.approx(a / 2**0.5, rel=1e-6)
    assert by_material.loc["Cu", "alkali_fraction"] == 0


def test_perovskite_and_rock_salt_motifs():
    """Corner-sharing octahedra in SrTiO3 and ReO3, edge-sharing ones in rock salt."""
    perovskite = Structure(
        Lattice.cubic(3.905),
        ["Sr", "Ti", "O", "O", "O"],
        [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
    )
    reo3 = Structure(
        Lattice.cubic(3.75),
        ["Re", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]],
    )
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0] * 3, [0.5] * 3]
    )
    kcl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.29), ["K", "Cl"], [[0] * 3, [0.5] * 3])
    frame = structure_features({"SrTiO3": perovskite, "ReO3": reo3, "NaCl": rocksalt, "KCl": kcl})
    assert frame.loc["SrTiO3", "perovskite_derived"] == 1
    assert frame.loc["SrTiO3", "corner_sharing_octahedra_fraction"] == 1
    assert frame.loc["SrTiO3", "octahedral_site_fraction"] == pytest.approx(1 / 5)  # Ti only
    assert frame.loc["ReO3", "perovskite_derived"] == 1
    assert frame.loc["NaCl", "octahedral_site_fraction"] == pytest.approx(0.5)  # Na, not Cl
    assert frame.loc["NaCl", "perovskite_derived"] == 0
    assert frame.loc["NaCl", "mean_coordination"] == 6
    assert frame.loc["KCl", "alkali_fraction"] == 0.5
    # larger cation, longer bonds, larger radii
    assert frame.loc["KCl", "max_atomic_radius"] > frame.loc["NaCl", "max_atomic_radius"]
    assert frame.loc["KCl", "mean_bond_length"] == pytest.approx(6.29 / 2)
    assert frame.loc["SrTiO3", "max_bond_electronegativity_difference"] == pytest.approx(
        3.44 - 0.95
    )


def test_a_failing_featurizer_gives_nan(caplog):
    """Disordered sites break the structural features; the composition ones remain."""
    disordered = Structure(Lattice.cubic(3.8), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    featurizer = StructureFeaturizer()
    with caplog.at_level(logging.WARNING, logger="tdphonon.analysis"):
        frame = structure_features({"CuAu-disordered": disordered, "Cu": fcc("Cu")}, featurizer)
    row = frame.loc["CuAu-disordered"]
    assert row["mean_electronegativity"] == pytest.approx((1.90 + 2.54) / 2)
    assert np.isnan(row["mean_coordination"]) and np.isnan(row["packing_fraction"])
    assert np.isfinite(frame.loc["Cu", "mean_coordination"])
    assert "not computed" in caplog.text
    # each crystal once: a second call reads the cache
    assert len(featurizer.cache) == 2
    structure_features({"again": fcc("Cu")}, featurizer)
    assert len(featurizer.cache) == 2


# -- trends and models ----------------------------------------------------------------------------


def test_trends(table):
    result = trends(table, "sigma_a")
    done = table[table["status"] == "completed"]
    by_element = result["by_element"].set_index(["temperature", "element"])
    for temperature in TEMPERATURES:
        at_t = done[done["temperature"] == temperature].set_index("material")["sigma_a"]
        gold = by_element.loc[(temperature, "Au")]
        assert gold["count"] == 2  # Au and Cu3Au
        assert gold["mean"] == pytest.approx((at_t["Au"] + at_t["Cu3Au"]) / 2)
        assert (temperature, "Ni") not in by_element.index  # failed: no value
        assert (temperature, "Pt") not in by_element.index
    prototypes = result["by_prototype"].set_index(["temperature", "prototype"])
    assert prototypes.loc[(300.0, "A_Fm-3m"), "count"] == 5
    assert prototypes.loc[(300.0, "AB3_Pm-3m"), "count"] == 1
    spacegroups = result["by_spacegroup"]
    assert set(spacegroups["spacegroup_symbol"]) == {"Fm-3m", "Pm-3m"}


def test_driver_model_of_the_campaign(table):
    model = driver_model(table, "mean_relative_shift", n_splits=3, n_repeats=3)
    assert model.n_compounds == 6 and model.n_samples == 12
    assert "temperature" in model.features  # two temperatures
    assert np.isfinite([model.r2_cv, model.mae_cv, model.baseline_r2, model.baseline_mae]).all()
    assert len(model.predictions) == 12
    # all temperatures of a compound in one fold
    assert (model.predictions.groupby("id")["fold"].nunique() == 1).all()
    assert list(model.importances["importance"]) == sorted(
        model.importances["importance"], reverse=True
    )
    with pytest.raises(InsufficientDataError, match=r"6 compound.*fewer than the 7"):
        driver_model(table, "sigma_a", n_splits=7)


@pytest.mark.parametrize("estimator", ["random_forest", "gradient_boosting"])
def test_driver_model_finds_the_driver(estimator):
    """A target that is a function of one feature plus noise: that feature ranks first."""
    rng = np.random.default_rng(3)
    n = 40
    frame = pd.DataFrame(
        {name: rng.uniform(0, 1, n) for name in ("mean_atomic_radius", "density", "group")}
    )
    frame["mean_electronegativity"] = rng.uniform(0.7, 4, n)
    frame.loc[rng.choice(n, 4, replace=False), "density"] = np.nan  # imputed
    frame["id"] = [f"compound-{i}" for i in range(n)]
    frame["temperature"] = 300.0
    frame["sigma_a"] = 0.1 + 0.4 * frame["mean_atomic_radius"] ** 2 + rng.normal(0, 0.02, n)
    features = ["mean_atomic_radius", "density", "group", "mean_electronegativity"]
    model = driver_model(frame, "sigma_a", features, estimator=estimator, n_splits=4, seed=1)
    assert model.importances["name"].iloc[0] == "mean_atomic_radius"
    assert model.r2_cv > 0.8 and model.baseline_r2 < 0.05
    assert model.mae_cv < 0.5 * model.baseline_mae
    again = driver_model(frame, "sigma_a", features, estimator=estimator, n_splits=4, seed=1)
    assert again.r2_cv == model.r2_cv  # seeded


# -- the command line -----------------------------------------------------------------------------


def test_analyze_command(campaign, tmp_path, capsys):
    paths = {kind: tmp_path / f"analysis.{kind}" for kind in ("json", "csv")}
    plots = tmp_path / "plots"
    argv = ["analyze", "--store", str(campaign["folder"]), "--folds", "3", "--plots", str(plots)]
    assert main([*argv, "--json", str(paths["json"]), "--csv", str(paths["csv"]), "-q"]) == 0
    out = capsys.readouterr().out
    assert "8 compounds, 16 rows" in out and "2 failed" in out
    summary = json.loads(paths["json"].read_text())
    assert len(summary["compounds"]) == 16
    for entry in summary["compounds"]:
        assert {"id", "formula", "temperature", "status", "sigma_a", "mean_relative_shift"} <= set(
            entry
        )
    failed = [e for e in summary["compounds"] if e["formula"] in ("Ni", "Pt")]
    assert len(failed) == 4
    assert all(e["status"] == "failed" and e["sigma_a"] is None for e in failed)
    assert summary["model"]["target"] == "sigma_a"
    assert {"r2_cv", "baseline_r2", "mae_cv", "baseline_mae"} <= set(summary["model"])
    ranked = [f["importance"] for f in summary["features"]]
    assert ranked == sorted(ranked, reverse=True) and all("name" in f for f in summary["features"])
    assert [m["target"] for m in summary["models"]] == ["sigma_a", "mean_relative_shift"]
    csv = pd.read_csv(paths["csv"])
    assert len(csv) == 16 and {"prototype", "mean_coordination", "sigma_a"} <= set(csv.columns)
    for target in ("sigma_a", "mean_relative_shift"):
        for name in (
            "periodic_table_300K",
            "periodic_table_600K",
            "by_prototype",
            "by_spacegroup",
            "parity",
            "importance",
        ):
            assert (plots / f"{target}_{name}.png").stat().st_size > 5_000, (target, name)
    assert (plots / "sigma_a_vs_mean_relative_shift.png").exists()

    # one temperature, one target: temperature is no feature then
    one = tmp_path / "one.json"
    assert main([*argv, "--temperature", "600", "--target", "sigma_a", "--no-plots", "--json",
                 str(one), "-q"]) == 0  # fmt: skip
    summary = json.loads(one.read_text())
    assert {e["temperature"] for e in summary["compounds"]} == {600.0}
    assert "temperature" not in {f["name"] for f in summary["features"]}


def test_export_and_analyze_pieces(campaign, table, tmp_path, capsys):
    """A campaign exported without its store reads back as the same table; pieces merge,
    a compound's completed row wins over a failed one, and analyze --from uses them."""
    from tdphonon.analysis import export_campaign, read_campaign

    whole = tmp_path / "whole.json.xz"
    assert export_campaign(campaign["store"], whole) == 16
    back, structures = read_campaign([whole])
    stored = campaign_table(campaign["store"])
    pd.testing.assert_frame_equal(back[stored.columns], stored, check_dtype=False)
    assert set(structures) == set(campaign_structures(campaign["store"]))

    # two pieces: the second reruns Cu (completed) where the first has it failed
    rows = json.loads(lzma.open(whole, "rt").read())
    cu = [r for r in rows["rows"] if r["material"] == "Cu"]
    first = dict(rows, rows=[r for r in rows["rows"] if r["material"] != "Cu"]
                 + [dict(r, status="failed", sigma_a=None) for r in cu])  # fmt: skip
    second = dict(rows, rows=cu)
    paths = [tmp_path / "part-1.json", tmp_path / "part-2.json"]
    for path, content in zip(paths, (second, first), strict=True):
        path.write_text(json.dumps(content))
    merged, _ = read_campaign(paths)
    assert len(merged) == 16
    assert (merged.loc[merged["material"] == "Cu", "status"] == "completed").all()
    # not converged (finished, with measures) ranks above failed
    third = tmp_path / "part-3.json"
    third.write_text(json.dumps(dict(rows, rows=[dict(r, status="not converged") for r in cu])))
    ranked, _ = read_campaign([paths[1], third])
    assert (ranked.loc[ranked["material"] == "Cu", "status"] == "not converged").all()

    out = tmp_path / "pieces.json"
    argv = ["analyze", "--from", *map(str, paths), "--folds", "3", "--no-plots", "-q"]
    assert main([*argv, "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["n_compounds"] == 8 and summary["status_counts"]["completed"] == 6
    assert summary["model"]["r2_cv"] is not None

    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["analyze", "--from", str(bad), "--no-plots", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a campaign export" in err and len(err.splitlines()) == 1


def test_analyze_errors(campaign, tmp_path, capsys):
    store = ["--store", str(campaign["folder"])]
    unreachable = tmp_path / "jobflow.yaml"  # MongoDB on a closed port
    unreachable.write_text(
        "docs_store: {type: MongoStore, database: t, collection_name: o, host: 127.0.0.1, "
        "port: 1}\nadditional_stores:\n  data: {type: GridFSStore, database: t, "
        "collection_name: b, host: 127.0.0.1, port: 1}\n"
    )
    cases = [
        (["--store", str(unreachable), "--timeout", "1"], "mongodb://127.0.0.1:1/t"),
        ([*store, "--temperature", "450"], "no results at 450 K"),
        ([*store, "--folds", "1"], "--folds"),
        (["--store", str(tmp_path / "empty")], "no tdphonon results"),
        ([*store, "--target", "free_energy"], "--target"),
    ]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        cases.append(([*store, "--parquet", str(tmp_path / "t.parquet")], "pyarrow"))
    for argv, message in cases:
        assert main(["analyze", *argv, "--no-plots", "-q"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_help_does_not_import_the_analysis():
    """``tdphonon --help`` stays fast: pandas, scikit-learn and the features load on use."""
    code = (
        "import sys; from tdphonon.cli import build_parser; build_parser(); "
        "print(sorted({'sklearn', 'tdphonon.analysis', 'pymatgen.analysis.local_env'} "
        "& set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
