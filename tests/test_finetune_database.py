"""Fine-tuning at database scale: displacement subsets, the graph cache, phonondb training,
the shipped model and ``tdphonon models``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tdphonon.forcesets import read_phonondb

PHONONDB = "data/phonondb/archives"


def _archive(shared_dir, name: str):
    return shared_dir / PHONONDB / name


@pytest.fixture(scope="module")
def nd_f3(shared_dir):
    """NdF3 (P-3c1, 96-atom supercell): 16 displacements of 4 distinct atoms."""
    return read_phonondb(_archive(shared_dir, "materials-id-254-ndf3-p-3c1-165.tar.lzma"))


def _displaced_atom(fs, index):
    delta = fs.supercells[index].positions - fs.reference.positions
    return int(np.argmax(np.linalg.norm(delta, axis=1)))


def test_training_subset_covers_distinct_atoms_first(nd_f3):
    distinct = {entry["number"] for entry in nd_f3.dataset["first_atoms"]}
    assert len(nd_f3) == 16 and len(distinct) == 4
    subset = nd_f3.training_subset(4, seed=3)
    indices = subset.metadata["subset"]["indices"]
    assert len(subset) == 4 and subset.metadata["subset"]["of"] == 16
    # one supercell of each distinct displaced atom before any second direction
    assert {_displaced_atom(nd_f3, i) for i in indices} == distinct
    for k, i in enumerate(indices):
        assert subset.supercells[k] is nd_f3.supercells[i]
        np.testing.assert_array_equal(subset.forces[k], nd_f3.forces[i])
    assert subset.harmonic_indices == [] and subset.summary()["n_supercells"] == 4
    # reproducible for a seed, different for another, never more than asked
    assert nd_f3.training_subset(4, seed=3).metadata["subset"]["indices"] == indices
    assert any(
        nd_f3.training_subset(4, seed=s).metadata["subset"]["indices"] != indices
        for s in range(4, 10)
    )
    six = nd_f3.training_subset(6, seed=0).metadata["subset"]["indices"]
    assert len(set(six)) == 6
    assert nd_f3.training_subset(16) is nd_f3
    with pytest.raises(ValueError, match="max_supercells"):
        nd_f3.training_subset(0)


def test_graph_cache_gives_the_in_memory_chunks_once(tmp_path, nd_f3, m3gnet_path, monkeypatch):
    import torch

    from tdphonon import finetune as ft
    from tdphonon.potentials import load_potential

    potential = load_potential(m3gnet_path)
    subset = nd_f3.training_subset(5)
    memory = ft.build_samples([subset], potential, batch_size=4)
    cached = ft.build_samples([subset], potential, batch_size=4, cache_dir=tmp_path)
    assert len(cached) == len(memory) == 2
    files = list(tmp_path.glob("*.pt"))
    assert len(files) == 1
    for chunk_m, chunk_c in zip(memory, (cached[i] for i in range(len(cached))), strict=True):
        assert len(chunk_m) == len(chunk_c)
        for (g_m, lat_m, _, lab_m), (g_c, lat_c, _, lab_c) in zip(chunk_m, chunk_c, strict=True):
            assert torch.equal(g_m.edge_index, g_c.edge_index)
            assert torch.equal(g_m.frac_coords, g_c.frac_coords)
            assert torch.equal(lat_m, lat_c)
            assert torch.equal(lab_m["forces"], lab_c["forces"])
            assert lab_m["force_weight"] == lab_c["force_weight"]
    # a second run reuses the file: no graph is converted again
    calls = []
    monkeypatch.setattr(ft, "_compound_chunks", lambda *a, **k: calls.append(a) or [])
    again = ft.build_samples([subset], potential, batch_size=4, cache_dir=tmp_path)
    assert calls == [] and len(again) == 2
    # other data or settings get another file
    ft.build_samples([nd_f3.training_subset(5, seed=1)], potential, 4, cache_dir=tmp_path)
    assert len(calls) == 1


def test_finetune_on_phonondb_lowers_unseen_error(tmp_path, shared_dir, m3gnet_path):
    """Three rocksalt oxides of phonondb (PBEsol), two displacements each, from the graph
    cache: the phonon MAE of a fourth rocksalt compound, never trained on, drops."""
    from tdphonon.finetune import FineTuneSettings, finetune

    train = [
        read_phonondb(_archive(shared_dir, name))
        for name in (
            "materials-id-2605-cao-fm-3m-225.tar.lzma",
            "materials-id-2472-sro-fm-3m-225.tar.lzma",
            "materials-id-1342-bao-fm-3m-225.tar.lzma",
        )
    ]
    validation = [read_phonondb(_archive(shared_dir, "materials-id-1265-mgo-fm-3m-225.tar.lzma"))]
    settings = FineTuneSettings(
        max_epochs=3, energy_weight=0.0, lr=1e-3, max_displacements=1, patience=3
    )
    result = finetune(m3gnet_path, train, validation, settings, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 3
    assert result.provenance["metrics"]["n_training_supercells"] == 3
    assert result.best_epoch >= 1
    assert result.after.frequency_mae_thz < 0.8 * result.before.frequency_mae_thz
    assert all("eta_s" in record for record in result.history)


def test_models_cli_lists_shipped_models(tmp_path, monkeypatch, capsys):
    from tdphonon.cli import main
    from tdphonon.potentials import catalog

    shipped = tmp_path / "shipped"
    model = shipped / "Test-Model"
    model.mkdir(parents=True)
    for name in catalog.MODEL_FILES:
        (model / name).write_text("{}")
    (model / "provenance.json").write_text(
        json.dumps(
            {
                "base_model": {"name": "M3GNet-MP-2021.2.8-PES"},
                "training_data": {"n_compounds": 12, "source": "phonondb"},
                "metrics": {
                    "test": {
                        "finetuned_mae_thz": 0.5,
                        "pretrained_mae_thz": 2.0,
                        "n_compounds": 30,
                    }
                },
            }
        )
    )
    monkeypatch.setattr(catalog, "SHIPPED_DIR", shipped)
    monkeypatch.setenv("TDPHONON_MODEL", str(tmp_path / "elsewhere"))
    assert catalog.shipped_model_dir("Test-Model") == model
    assert catalog.shipped_model_dir("../Test-Model") is None
    assert catalog.shipped_model_dir("Missing") is None
    assert main(["models", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "Test-Model" in out and "shipped" in out
    assert "fine-tuned from M3GNet-MP-2021.2.8-PES; on 12 compounds of phonondb" in out
    assert "test phonon MAE 0.500 THz (base 2.000) on 30 compounds" in out
    listed = json.loads((tmp_path / "m.json").read_text())
    assert listed["models"][0]["name"] == "Test-Model"
    assert listed["models"][1]["origin"] == "$TDPHONON_MODEL"


def test_finetune_cli_streams_displacement_subsets(tmp_path, shared_dir, m3gnet_path, capsys):
    """``--max-displacements``: training compounds keep N displacements, the validation
    compound all of them; the graphs land in ``--cache-dir``."""
    from tdphonon.cli import main

    archives = [
        _archive(shared_dir, "materials-id-254-ndf3-p-3c1-165.tar.lzma"),
        _archive(shared_dir, "materials-id-1265-mgo-fm-3m-225.tar.lzma"),
    ]
    argv = ["finetune", *map(str, archives), "--base", str(m3gnet_path)]
    argv += ["--out", str(tmp_path / "model"), "--epochs", "1", "--max-displacements", "1"]
    argv += ["--validation", "mp-254-F3Nd", "--cache-dir", str(tmp_path / "graphs"), "-q"]
    assert main([*argv, "--json", str(tmp_path / "m.json")]) == 0
    assert "training on 1 compounds (1 supercells)" in capsys.readouterr().out
    provenance = json.loads((tmp_path / "m.json").read_text())
    assert provenance["train"][0]["n_supercells"] == 1  # MgO: 1 of 2
    assert provenance["validation"][0]["n_supercells"] == 16  # NdF3: all 16 kept
    assert provenance["settings"]["max_displacements"] == 1
    assert len(list((tmp_path / "graphs").glob("*.pt"))) == 1


def test_shipped_model_reproduces_its_recorded_test_metric(shared_dir):
    """``M3GNet-phonondb-PBEsol`` loads by name (no path, no network) and gives, on the
    cheapest of its test compounds, the phonon MAE recorded in its provenance."""
    import csv

    from tdphonon.evaluation import evaluate
    from tdphonon.potentials import MatglCalculator, load_potential
    from tdphonon.potentials.catalog import shipped_model_dir

    folder = shipped_model_dir("M3GNet-phonondb-PBEsol")
    assert folder is not None
    provenance = json.loads((folder / "provenance.json").read_text())
    test = provenance["metrics"]["test"]
    assert provenance["training_data"]["n_compounds"] >= 30
    test_ids = provenance["training_data"]["test_ids"]
    assert not set(test_ids) & set(provenance["training_data"]["train_ids"])
    assert test["finetuned_mae_thz"] < test["pretrained_mae_thz"]
    index = {r["mpid"]: r for r in csv.DictReader((shared_dir / "data/phonondb/index.csv").open())}
    mpid = min(test_ids, key=lambda i: (int(index[i]["n_disp"]) * int(index[i]["nat_super"]), i))
    recorded = next(c for c in test["per_compound"] if c["name"].startswith(f"{mpid}-"))
    potential = load_potential("M3GNet-phonondb-PBEsol")
    assert potential.tdphonon_info["origin"] == "shipped"
    fs = read_phonondb(_archive(shared_dir, index[mpid]["archive"]))
    result = evaluate([fs], MatglCalculator(potential))
    assert result.frequency_mae_thz == pytest.approx(recorded["finetuned_thz"], abs=2e-3)
