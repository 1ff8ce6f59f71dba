"""Phonon evaluation protocol, fine-tuning (matgl + lightning) and the stored-model round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from tdphonon.evaluation import MESH_LENGTH, dft_frequencies, evaluate
from tdphonon.forcesets import ForceSet, ForceSetError, read_force_sets, read_phono3py
from tdphonon.potentials import ForceCalculator


class LookupCalculator(ForceCalculator):
    """Returns given forces for given structures (matched by positions); zeros otherwise."""

    def __init__(self, force_set: ForceSet, scale: float = 1.0) -> None:
        super().__init__("lookup")
        self.table = [
            (a.positions, f * scale)
            for a, f in zip(force_set.supercells, force_set.forces, strict=True)
        ]

    def _evaluate_batch(self, structures):
        forces = []
        for atoms in structures:
            match = [f for p, f in self.table if np.allclose(p, atoms.positions, atol=1e-9)]
            forces.append(match[0] if match else np.zeros((len(atoms), 3)))
        return np.zeros(len(structures)), forces

    def provenance(self):
        return {"name": "lookup", "kind": "test"}

    def as_ase_calculator(self):
        raise NotImplementedError


@pytest.fixture(scope="module")
def sets(shared_dir):
    folder = shared_dir / "data" / "phonon-forcesets"
    return {
        s.name: s
        for s in read_force_sets([folder / "NaCl", folder / "MgO", folder / "ZrAlNi_P-62m"])
    }


def test_dft_frequencies_match_phonopy(sets):
    import phonopy

    for fs in sets.values():
        ph = phonopy.load(fs.source, log_level=0, is_nac=False)
        ph.run_mesh(MESH_LENGTH, is_gamma_center=True)
        freqs, weights, mesh = dft_frequencies(fs)
        np.testing.assert_allclose(freqs, ph.mesh.frequencies, atol=1e-5)
        assert mesh == list(ph.mesh.mesh_numbers) and weights.sum() == np.prod(mesh)


def test_evaluating_dft_against_itself_gives_zero(sets):
    result = evaluate([sets["NaCl"]], LookupCalculator(sets["NaCl"]))
    nacl = result.compounds[0]
    assert nacl.frequency_mae_thz < 1e-6 and nacl.force_mae_ev_per_angstrom < 1e-12
    assert nacl.n_force_evaluations == 3  # 2 displaced + the undisplaced supercell
    # forces scaled by 4 -> frequencies doubled: MAE = mean |nu| of the DFT phonons
    scaled = evaluate([sets["NaCl"]], LookupCalculator(sets["NaCl"], 4.0)).compounds[0]
    freqs, weights, _ = dft_frequencies(sets["NaCl"])
    expected = np.average(np.abs(freqs).mean(axis=1), weights=weights)
    assert scaled.frequency_mae_thz == pytest.approx(expected, rel=1e-4)
    assert nacl.frequency_scale == pytest.approx(1.0, abs=1e-6)
    assert abs(nacl.frequency_mean_error_thz) < 1e-6
    # too stiff by exactly 2x: the diagnostics say so
    assert scaled.frequency_scale == pytest.approx(0.5, rel=1e-6)
    assert scaled.frequency_mean_error_thz == pytest.approx(expected, rel=1e-4)
    # a random-displacement set (symfc) against itself
    rd = read_phono3py(
        sets["NaCl"].source.split("phonon-forcesets")[0]
        + "phono3py/NaCl-rd__phono3py_params_NaCl.yaml.xz"
    )[0]
    rd_result = evaluate([rd], LookupCalculator(rd)).compounds[0]
    assert rd_result.frequency_mae_thz < 1e-5 and rd_result.n_force_evaluations == 101


def test_best_frequency_scale_is_the_mae_minimum():
    from tdphonon.evaluation import best_frequency_scale

    rng = np.random.default_rng(0)
    model = rng.uniform(-1, 12, size=(7, 6))
    dft = 1.3 * model + rng.normal(0, 0.4, size=model.shape)
    weights = rng.integers(1, 9, size=7)

    def mae(s):
        return np.average(np.abs(s * model - dft).mean(axis=1), weights=weights)

    best = best_frequency_scale(model, dft, weights)
    grid = np.linspace(0.5, 2.0, 30001)
    assert mae(best) <= min(mae(x) for x in grid) + 1e-12
    assert best == pytest.approx(1.3, abs=0.05)


def test_evaluate_cli_json(tmp_path, shared_dir, m3gnet_path):
    from tdphonon.cli import main

    out = tmp_path / "ev.json"
    code = main(
        [
            "evaluate",
            "--model",
            str(m3gnet_path),
            "-q",
            "--json",
            str(out),
            str(shared_dir / "data" / "phonon-forcesets" / "NaCl"),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc["overall"]) >= {"frequency_mae_thz", "force_mae_ev_per_angstrom"}
    assert doc["compounds"][0]["name"] == "NaCl"
    assert 0 < doc["overall"]["frequency_mae_thz"] < 1.0
    assert main(["evaluate", "--model", "emt", str(tmp_path / "missing")]) == 2


# -- fine-tuning -----------------------------------------------------------------------------

SETTINGS = {"max_epochs": 3, "batch_size": 1, "lr": 1e-4, "seed": 7, "trainable": "all"}


def _weights(potential):
    return {k: v.detach().clone() for k, v in potential.state_dict().items()}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, sets, m3gnet_path):
    from tdphonon.finetune import FineTuneSettings, finetune

    out = tmp_path_factory.mktemp("ft") / "model"
    result = finetune(
        m3gnet_path,
        [sets["NaCl"], sets["MgO"]],
        [],
        FineTuneSettings(**SETTINGS),
        out_dir=out,
        guard_structures=[sets["ZrAlNi_P-62m"].reference],
    )
    return result


def test_finetune_lowers_training_error_and_saves(tuned, sets, m3gnet_path):
    from tdphonon.potentials import MatglCalculator, get_calculator

    train = [sets["NaCl"], sets["MgO"]]
    before = evaluate(train, get_calculator(m3gnet_path, device="cpu"))
    after = evaluate(train, MatglCalculator(tuned.potential, device="cpu"))
    # force-only data (no energies at all) trained: the phonons of the training set improve
    assert after.frequency_mae_thz < 0.9 * before.frequency_mae_thz

    # ... and so does the trained quantity: RMS error of forces relative to the undisplaced cell
    def rms(calc):
        errors = []
        for fs in train:
            forces = calc.compute([fs.reference, *fs.supercells])[1]
            errors.append((forces[1:] - forces[0] - np.stack(fs.forces)).ravel())
        return float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))

    assert rms(MatglCalculator(tuned.potential, device="cpu")) < 0.8 * rms(
        get_calculator(m3gnet_path, device="cpu")
    )
    assert len(tuned.history) == 3 and tuned.best_epoch == 3
    assert all(np.isfinite(h["train_loss"]) for h in tuned.history)
    assert tuned.history[0]["train_energy_mae"] == 0.0  # masked, not NaN
    assert tuned.before is None  # no validation compounds
    # forgetting guard on a compound outside training: measured, nonzero, small
    assert tuned.forgetting["n_structures"] == 1
    assert 0 < tuned.forgetting["force_change_mae_ev_per_angstrom"] < 0.1
    prov = json.loads((tuned.model_dir / "provenance.json").read_text())
    assert prov["base_model"]["name"] == "M3GNet-MP-2021.2.8-PES"
    assert prov["settings"]["seed"] == 7
    # pretrained normalisation kept
    assert float(tuned.potential.data_std) == pytest.approx(4.5861, abs=1e-4)


def test_saved_model_loads_both_ways(tuned, sets):
    import matgl

    from tdphonon.potentials import MatglCalculator, get_calculator, load_potential
    from tdphonon.potentials import _matgl_legacy as legacy

    folder = tuned.model_dir
    sidecar = json.loads((folder / "tdphonon.json").read_text())
    assert sidecar["message_convention"] == "destination"  # as the pretrained weights
    structures = [sets["MgO"].supercells[0]]
    ref = MatglCalculator(tuned.potential, device="cpu").compute(structures)[1]
    ours = get_calculator(str(folder), device="cpu").compute(structures)[1]
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert load_potential(folder).tdphonon_info["message_convention"] == "destination"
    plain = matgl.load_model(folder)  # loads; weights need the recorded convention
    legacy.apply_m3gnet_destination_convention(plain)
    plain.tdphonon_info = {"name": "plain"}
    theirs = MatglCalculator(plain, device="cpu").compute(structures)[1]
    np.testing.assert_allclose(theirs, ref, atol=1e-5)


def test_finetune_deterministic_and_mixed_labels(sets, shared_dir, m3gnet_path):
    from tdphonon.finetune import FineTuneSettings, finetune

    rd = read_phono3py(
        shared_dir / "data" / "phono3py" / "phono3py_params_MgO-222rd-444rd.yaml.xz"
    )[0]
    keep = [0, 1, 2, 3]
    mixed = ForceSet(
        **{
            **vars(rd),
            "supercells": [rd.supercells[i] for i in keep],
            "forces": [rd.forces[i] for i in keep],
            "energies": [rd.energies[0], None, rd.energies[2], None],
            "stresses": [None] * 4,
            "harmonic_indices": [0, 1, 2, 3],
            "dataset": {"displacements": np.asarray(rd.dataset["displacements"])[keep]},
            "metadata": {},
        },
    )
    # one batch holds the compound's 4 supercells: its two energies train as a difference
    settings = FineTuneSettings(max_epochs=1, batch_size=4, lr=1e-3, seed=1, energy_weight=1.0)
    runs = [finetune(m3gnet_path, [mixed, sets["NaCl"]], [], settings) for _ in range(2)]
    w0, w1 = (_weights(r.potential) for r in runs)
    assert all(np.array_equal(w0[k], w1[k]) for k in w0)
    assert runs[0].history[0]["train_energy_mae"] > 0  # energies present are trained
    assert np.isfinite(runs[0].history[0]["train_loss"])
    other = finetune(
        m3gnet_path,
        [mixed, sets["NaCl"]],
        [],
        FineTuneSettings(max_epochs=1, batch_size=4, lr=1e-3, seed=2),
    )
    w2 = _weights(other.potential)
    assert any(not np.array_equal(w0[k], w2[k]) for k in w0)


def test_trainable_layers(m3gnet_path):
    from tdphonon.finetune import _set_trainable
    from tdphonon.potentials import load_potential

    potential = load_potential(m3gnet_path)
    last = ["model.graph_layers.2.", "model.three_body_interactions.2.", "model.final_layer"]
    assert _set_trainable(potential, "last-block") == _set_trainable(potential, last)
    counts = _set_trainable(potential, "last-block")
    assert 1e5 < counts["trainable"] < counts["frozen"]
    assert _set_trainable(potential, "all")["frozen"] == 0
    with pytest.raises(ValueError, match="last-block"):
        _set_trainable(potential, "some")


def test_finetune_bad_input(sets, m3gnet_path):
    from tdphonon.finetune import finetune
    from tdphonon.potentials import UnsupportedElementError

    with pytest.raises(ForceSetError, match="empty"):
        finetune(m3gnet_path, [], [])
    nacl = sets["NaCl"]
    alien = [
        Atoms(
            ["Og" if s == "Cl" else s for s in a.get_chemical_symbols()],
            cell=a.cell,
            positions=a.positions,
            pbc=True,
        )
        for a in nacl.supercells
    ]
    ref = alien[0].copy()
    bad = ForceSet(**{**vars(nacl), "supercells": alien, "reference": ref, "metadata": {}})
    with pytest.raises(UnsupportedElementError, match="Og"):
        finetune(m3gnet_path, [bad], [])
    with pytest.raises(ForceSetError, match="both in training and validation"):
        finetune(m3gnet_path, [nacl], [nacl])


def test_stored_model_round_trip(tmp_path, monkeypatch, sets, shared_dir, m3gnet_path):
    import shutil

    from jobflow import Flow
    from pymatgen.core import Structure

    from tdphonon.flows.finetune import FineTuneMaker
    from tdphonon.flows.sscha import SSCHAMaker
    from tdphonon.jobs.common import get_force_calculator
    from tdphonon.potentials import ModelLoadError
    from tdphonon.stores import embedded_store, run_flow

    cache = tmp_path / "cache"
    monkeypatch.setenv("TDPHONON_MODEL_CACHE", str(cache))
    folder = shared_dir / "data" / "phonon-forcesets"
    job = FineTuneMaker(
        base_model=str(m3gnet_path), settings={"max_epochs": 1, "batch_size": 2}
    ).make([folder / "NaCl", folder / "MgO"], validation=["MgO"])
    store = embedded_store(tmp_path / "store")
    run_flow(Flow([job]), store)
    doc = store.get_output(job.uuid, load=True)
    ref = doc["model"]
    assert ref["uuid"] == job.uuid and ref["base_model"] == "M3GNet-MP-2021.2.8-PES"
    assert doc["validation_before"]["compounds"][0]["name"] == "MgO"
    # the archive lives in the data store, not in the document
    raw = store.docs_store.query_one({"uuid": job.uuid})
    assert "blob_uuid" in json.dumps(raw["output"]["model_archive"])
    # another machine: empty cache, fetched from the store, hash verified
    local = get_force_calculator(ref, "cpu", 4)  # from this worker's cache
    shutil.rmtree(cache)
    with pytest.raises(ModelLoadError, match="could not be fetched"):
        get_force_calculator({**ref, "sha256": "0" * 64}, "cpu", 4)
    fetched = get_force_calculator(ref, "cpu", 8, store=store)
    assert (cache / ref["sha256"] / "model.json").is_file()
    atoms = sets["NaCl"].supercells[0]
    np.testing.assert_allclose(fetched.compute([atoms])[1], local.compute([atoms])[1], atol=1e-6)
    with pytest.raises(ModelLoadError, match="corrupt"):
        shutil.rmtree(cache)
        get_force_calculator(
            {**ref, "sha256": "1" * 64, "uuid": ref["uuid"]}, "cpu", 4, store=store
        )
    # SSCHAMaker accepts the OutputReference (unchecked) and the stored reference (checked:
    # fetched from the cache, which the fetch from the store fills again)
    get_force_calculator(ref, "cpu", 4, store=store)
    nacl = Structure.from_file(str(Path(__file__).parents[1] / "examples" / "NaCl.cif"))
    flow = SSCHAMaker(model=job.output.model, relax_maker=None).make(nacl, [300])
    assert flow.jobs[0].function_kwargs["potential"].model == job.output.model
    flow = SSCHAMaker(model=ref, relax_maker=None).make(nacl, [300])
    assert flow.jobs[0].function_kwargs["potential"].model.startswith("tdphonon-model://")


def test_finetune_job_resumes_from_the_store(tmp_path, monkeypatch, shared_dir, m3gnet_path):
    """A fine-tuning job killed mid-training is rerun from its last epoch stored in the DB."""
    from jobflow import Flow

    from tdphonon.flows.finetune import FineTuneMaker
    from tdphonon.jobs import finetune as finetune_jobs
    from tdphonon.stores import embedded_store, run_flow

    monkeypatch.setenv("TDPHONON_MODEL_CACHE", str(tmp_path / "cache"))
    folder = shared_dir / "data" / "phonon-forcesets"
    job = FineTuneMaker(
        base_model=str(m3gnet_path), settings={"max_epochs": 2, "batch_size": 2}
    ).make([folder / "NaCl", folder / "MgO"], validation=["MgO"])
    store = embedded_store(tmp_path / "store")
    original, saved = finetune_jobs.save_checkpoint, []

    def killed_after_epoch_1(job_store, uuid, path):
        original(job_store, uuid, path)
        raise RuntimeError("worker lost")

    monkeypatch.setattr(finetune_jobs, "save_checkpoint", killed_after_epoch_1)
    flow = Flow([job])
    with pytest.raises(RuntimeError):
        run_flow(flow, store)
    data_store = store.additional_stores["data"]
    assert data_store.query_one({"tdphonon_finetune_checkpoint": job.uuid})["n_bytes"] > 1e6

    def counted(job_store, uuid, path):
        saved.append(path)
        original(job_store, uuid, path)

    monkeypatch.setattr(finetune_jobs, "save_checkpoint", counted)
    run_flow(flow, store)  # the rerun, e.g. on another worker
    doc = store.get_output(job.uuid, load=True)
    assert [h["epoch"] for h in doc["history"]] == [1, 2]
    assert len(saved) == 1  # only epoch 2 was trained again
    assert data_store.query_one({"tdphonon_finetune_checkpoint": job.uuid}) is None


def test_finetune_cli(tmp_path, shared_dir, m3gnet_path, capsys):
    from tdphonon.cli import main
    from tdphonon.potentials import load_potential

    data = shared_dir / "data" / "phonon-forcesets"
    out = tmp_path / "model"
    argv = ["finetune", str(data / "NaCl"), str(data / "MgO"), "--base", str(m3gnet_path)]
    argv += ["--out", str(out), "--epochs", "1", "--validation", "MgO", "-q"]
    assert main([*argv, "--json", str(tmp_path / "m.json")]) == 0
    text = capsys.readouterr().out
    assert "MgO" in text and "ratio" in text and "best epoch" in text
    assert load_potential(out).tdphonon_info["message_convention"] == "destination"
    assert json.loads((tmp_path / "m.json").read_text())["validation"][0]["name"] == "MgO"
    assert not (tmp_path / "model.checkpoint").exists()  # removed once the model is saved
    assert main(argv) == 2  # OUT not empty
    assert "not empty" in capsys.readouterr().err
    missing = ["finetune", str(tmp_path / "nothing"), "--base", str(m3gnet_path)]
    assert main([*missing, "--out", str(tmp_path / "m2")]) == 2


def test_finetune_then_sscha_flow(tmp_path, monkeypatch, shared_dir, m3gnet_path):
    """FineTuneSSCHAMaker: relax, harmonic and SSCHA jobs all run with the stored model."""
    from jobflow import run_locally
    from pymatgen.core import Structure

    from tdphonon.flows import FineTuneMaker, FineTuneSSCHAMaker, SSCHAMaker
    from tdphonon.stores import embedded_store

    monkeypatch.setenv("TDPHONON_MODEL_CACHE", str(tmp_path / "cache"))
    folder = shared_dir / "data" / "phonon-forcesets"
    maker = FineTuneSSCHAMaker(
        finetune_maker=FineTuneMaker(
            base_model=str(m3gnet_path),
            validation=["MgO"],
            settings={"max_epochs": 1, "batch_size": 2},
        ),
        sscha_maker=SSCHAMaker(
            supercell_matrix=[[0, 1, 1], [1, 0, 1], [1, 1, 0]],  # of NaCl.cif: 16 atoms
            sscha_settings={
                "max_iterations": 2,
                "initial_snapshots": 8,
                "max_snapshots": 16,
                "frequency_tolerance": 0.5,
            },
        ),
    )
    nacl = Structure.from_file(str(Path(__file__).parents[1] / "examples" / "NaCl.cif"))
    flow = maker.make([folder / "NaCl", folder / "MgO"], [nacl], [300])
    store = embedded_store(tmp_path / "store")
    run_locally(flow, store=store, create_folders=False, log=False, ensure_success=True)
    sha = store.get_output(flow.jobs[0].uuid)["model"]["sha256"]
    used = {
        d["name"]: d["output"]["provenance"]["model"]
        for d in store.query(
            {"name": {"$in": ["harmonic", "sscha 300 K iteration 2"]}},
            properties=["name", "output.provenance"],
        )
    }
    assert set(used) == {"harmonic", "sscha 300 K iteration 2"}
    assert all(
        sha in model["path"] and model["message_convention"] == "destination"
        for model in used.values()
    )
    docs = [store.get_output(ref.uuid, which="last", load=True) for ref in flow.jobs[1].output]
    assert docs[0]["temperature"] == 300.0


def test_finetune_resumes_from_checkpoint(tmp_path, monkeypatch, sets, m3gnet_path):
    """A run killed after epoch 1 and restarted gives the uninterrupted run's weights."""
    from tdphonon import finetune as finetune_module
    from tdphonon.finetune import CHECKPOINT_FILE, FineTuneSettings, finetune

    validations = []

    def counted_evaluate(*args, **kwargs):
        validations.append(1)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(finetune_module, "evaluate", counted_evaluate)

    train, val = [sets["NaCl"]], [sets["MgO"]]
    settings = FineTuneSettings(max_epochs=2, batch_size=1, lr=1e-4, seed=3, patience=5)
    reference = finetune(m3gnet_path, train, val, settings)

    class Killed(Exception):
        pass

    def kill(path):
        assert path.name == CHECKPOINT_FILE and path.is_file()
        raise Killed

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Killed):
        finetune(m3gnet_path, train, val, settings, checkpoint_dir=ckpt, on_checkpoint=kill)
    written, validations[:] = [], []
    resumed = finetune(
        m3gnet_path, train, val, settings, checkpoint_dir=ckpt, on_checkpoint=written.append
    )
    assert len(written) == 1  # only epoch 2 was trained again
    assert len(validations) == 2  # epoch 2 and the final model; the pretrained one is stored
    assert resumed.before.frequency_mae_thz == reference.before.frequency_mae_thz
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    # pytest >= 9.2 compares flat mappings only: one record (epoch metrics) at a time; the
    # wall-clock fields (elapsed time, ETA) differ between runs by nature
    clock = {"elapsed_s", "eta_s"}
    for got, expected in zip(resumed.history, reference.history, strict=True):
        assert set(got) == set(expected) and clock <= set(got)
        got, expected = ({k: v for k, v in r.items() if k not in clock} for r in (got, expected))
        assert got == pytest.approx(expected, nan_ok=True)
    assert resumed.best_epoch == reference.best_epoch
    w_ref, w_res = _weights(reference.potential), _weights(resumed.potential)
    assert all(torch_equal(w_ref[k], w_res[k]) for k in w_ref)

    # a finished checkpoint: nothing is trained again
    again = finetune(m3gnet_path, train, val, settings, checkpoint_dir=ckpt, on_checkpoint=kill)
    w_again = _weights(again.potential)
    assert again.history == resumed.history
    assert all(torch_equal(w_res[k], w_again[k]) for k in w_res)

    # other settings: the checkpoint is ignored, with a warning
    other = FineTuneSettings(max_epochs=1, batch_size=1, lr=3e-4, seed=3)
    with pytest.warns(UserWarning, match="another base model, data or settings"):
        fresh = finetune(m3gnet_path, train, val, other, checkpoint_dir=ckpt)
    assert [h["epoch"] for h in fresh.history] == [1]


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_finite_temperature_snapshots_split_and_weights(shared_dir):
    """A compound's own random-displacement data: held-out snapshots for validation, and
    weights that make far-from-equilibrium snapshots count by their relative force error."""
    import argparse

    from tdphonon.cli.finetune import _read_split
    from tdphonon.forcesets import REFERENCE_FORCE, supercell_weight
    from tdphonon.structures import minimum_image_vectors

    path = shared_dir / "data" / "KCl-SSCHA" / "phonopy_mlpsscha_params_KCl-120.yaml.xz"
    args = argparse.Namespace(
        data=[str(path)], max_displacements=None, validation=None, validation_fraction=0.2, seed=0
    )
    (train,), (held,) = _read_split(args)
    assert (len(train), len(held)) == (96, 24) and held.name == f"{train.name}:held-out"
    assert held.is_random and held.harmonic_indices == list(range(24))
    assert not set(train.metadata["split"]["indices"]) & set(held.metadata["split"]["indices"])
    for atoms, u in zip(held.supercells, held.dataset["displacements"], strict=True):
        np.testing.assert_allclose(
            u, minimum_image_vectors(atoms.positions - held.reference.positions, atoms.cell)
        )
    assert held.harmonic_forces().shape == (24, 64, 3)

    rms = [np.sqrt(np.mean(np.sum(f**2, axis=1))) for f in train.forces]
    weights = train.loss_weights()
    np.testing.assert_allclose(weights, np.minimum(1, (REFERENCE_FORCE / np.array(rms)) ** 2))
    assert max(rms) > 50 and min(weights) < 1e-5  # the data reach forces of tens of eV/Å

    # finite displacements: (0.01 Å / u)², whatever the forces
    u = np.zeros((64, 3))
    u[5] = [0.02, 0, 0]
    assert supercell_weight(u, np.full((64, 3), 3.0)) == pytest.approx(0.25)
    u[9] = [0, 0.01, 0]  # a phono3py pair
    assert supercell_weight(u, np.ones((64, 3))) == pytest.approx(0.25)


def test_finetune_energies_enter_as_differences(shared_dir, m3gnet_path):
    """A constant energy offset between the DFT setup and the model is no error: the same
    data with every energy shifted by 1 eV/atom trains the same weights."""
    from dataclasses import replace

    from tdphonon.finetune import FineTuneSettings, finetune
    from tdphonon.potentials import load_potential

    path = shared_dir / "data" / "KCl-SSCHA" / "phonopy_mlpsscha_params_KCl-120.yaml.xz"
    (kcl,) = read_force_sets(path)
    small = kcl.training_subset(6, seed=0)
    n_atoms = len(small.reference)
    shifted = replace(small, energies=[e + n_atoms for e in small.energies])
    settings = FineTuneSettings(max_epochs=1, batch_size=3, lr=1e-3, seed=0, energy_weight=10.0)
    runs = [finetune(m3gnet_path, [s], [], settings) for s in (small, shifted)]
    w0, w1 = (_weights(r.potential) for r in runs)
    base = _weights(load_potential(m3gnet_path))
    moved = max(np.abs(w0[k] - base[k]).max() for k in w0)
    offset = max(np.abs(w0[k] - w1[k]).max() for k in w0)  # float32 rounding through Adam
    assert moved > 0 and offset < 0.05 * moved, (offset, moved)
    e0, e1 = (r.history[0]["train_energy_mae"] for r in runs)
    assert e0 > 0 and e1 == pytest.approx(e0, rel=1e-3)
    no_energy = finetune(m3gnet_path, [small], [], replace(settings, energy_weight=0.0))
    w2 = _weights(no_energy.potential)
    assert max(np.abs(w0[k] - w2[k]).max() for k in w0) > 10 * offset  # energies do train
