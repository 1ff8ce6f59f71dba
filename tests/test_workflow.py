"""The jobflow workflow end to end: EMT fcc Al on embedded (MontyDB) stores."""

from __future__ import annotations

import json

import bson
import numpy as np
import pytest
from jobflow import run_locally
from monty.json import MontyDecoder, jsanitize
from pymatgen.core import Lattice, Structure
from scipy.spatial.transform import Rotation

from tdphonon.flows import SSCHAMaker
from tdphonon.harmonic import harmonic_force_constants
from tdphonon.jobs import get_force_calculator, phonon_doc_force_constants, sscha_iteration_job
from tdphonon.jobs.sscha import HarmonicReference
from tdphonon.potentials import PotentialSpec, UnsupportedElementError
from tdphonon.schemas import (
    HarmonicPhononDoc,
    PackedArray,
    SSCHAContinuation,
    SSCHAIterationDoc,
    SSCHATemperatureDoc,
    as_array,
)
from tdphonon.stores import embedded_store, get_store, run_flow
from tdphonon.structures import StructureError, make_phonopy

MONGO_LIMIT = 16 * 1024**2
FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
TEMPERATURES = [300.0, 800.0]
SETTINGS = {"frequency_tolerance": 0.15, "seed": 1}


def bson_size(document: dict) -> int:
    """Size in bytes of a raw store document as MongoDB would store it."""
    return len(bson.encode({k: v for k, v in document.items() if k != "_id"}))


def assert_documents_fit(store) -> None:
    """Every stored document, and every array blob, is below MongoDB's 16 MB limit."""
    for collection in (store.docs_store, *store.additional_stores.values()):
        for document in collection.query({}):
            assert bson_size(document) < MONGO_LIMIT


def outputs(store, uuid: str) -> list[dict]:
    """Raw stored outputs of one job uuid (all indices), arrays loaded, ascending index."""
    return list(store.query({"uuid": uuid}, sort={"index": 1}, load=True))


def decode(output: dict):
    return MontyDecoder().process_decoded(output)


def conventional_al(a: float = 4.05, rotation=None) -> Structure:
    matrix = np.eye(3) * a
    if rotation is not None:
        matrix = matrix @ rotation.T
    return Structure(Lattice(matrix), ["Al"] * 4, FCC)


@pytest.fixture(scope="module", autouse=True)
def _one_blas_thread():
    """Multithreaded BLAS is several times slower on these small matrices (2 cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def al_run(tmp_path_factory):
    """Relax + harmonic + SSCHA at 300 K then 800 K (warm start), run once."""
    store = embedded_store(tmp_path_factory.mktemp("store"))
    maker = SSCHAMaker(model="emt", min_length=7.0, sscha_settings=SETTINGS)
    flow = maker.make(conventional_al(), temperatures=TEMPERATURES)
    harmonic, results = run_flow(flow, store)
    return flow, store, harmonic, results


@pytest.fixture(scope="module")
def phonon_doc():
    """An atomate2 PhononBSDOSDoc of a rotated conventional cell (8-atom supercell)."""
    from atomate2.common.schemas.phonons import ForceConstants, PhononBSDOSDoc

    structure = conventional_al(rotation=Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix())
    matrix = np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])  # phonopy convention, not diagonal
    result = harmonic_force_constants(make_phonopy(structure, matrix), get_force_calculator("emt"))
    return PhononBSDOSDoc(
        structure=structure,
        force_constants=ForceConstants(result.force_constants.tolist()),
        supercell_matrix=matrix.tolist(),
        has_imaginary_modes=False,
    )


def test_flow_outputs(al_run):
    _, _, harmonic, results = al_run
    assert [r["temperature"] for r in results] == TEMPERATURES
    assert harmonic["structure"].lattice.a < 4.05 / np.sqrt(2) - 0.01  # EMT relaxed
    assert harmonic["n_supercell_atoms"] == 32
    assert not harmonic["has_imaginary_modes"]
    assert harmonic["provenance"]["model"]["name"] == "emt"
    for doc in results:
        assert doc["converged"], doc["message"]
        assert doc["statistics"] == "quantum"
        assert doc["n_iterations"] == len(doc["history"]) >= 2
        assert doc["n_force_evaluations"] == doc["history"][-1]["n_force_evaluations"] > 0
        assert set(doc["frequency_shifts"]) == set(doc["labelled_frequencies"])
        assert doc["harmonic_labelled_frequencies"] == harmonic["labelled_frequencies"]
        assert doc["mean_frequency_shift"] > 0.05  # EMT Al stiffens: renormalised != harmonic
        for label, shift in doc["frequency_shifts"].items():
            np.testing.assert_allclose(
                shift,
                np.subtract(
                    doc["labelled_frequencies"][label], harmonic["labelled_frequencies"][label]
                ),
            )
        assert doc["commensurate_frequencies"].shape == doc["commensurate_frequency_errors"].shape
        assert len(doc["commensurate_frequencies"]) == 3 * 32 - 3
        assert doc["free_energy"] is not None and doc["free_energy_error"] >= 0
        assert doc["free_energy_note"] == "ok"
        # sigma^A from the stored ensemble: EMT Al is anharmonic, per element = overall
        assert 0 < doc["sigma_a"] < 1 and doc["sigma_a_error"] < 0.2 * doc["sigma_a"]
        assert doc["sigma_a_by_group"]["Al"] == pytest.approx(doc["sigma_a"])
        # renormalisation measures, from the harmonic force constants loaded from the store
        assert doc["renormalisation_note"] == "ok"
        for key in (
            "mean_relative_shift",
            "mean_absolute_relative_shift",
            "max_relative_shift",
            "stabilised_mode_fraction",
            "harmonic_free_energy",
            "anharmonic_free_energy",
            "anharmonic_free_energy_error",
        ):
            assert np.isfinite(doc[key]), key
        assert 0 < doc["mean_relative_shift"] <= doc["mean_absolute_relative_shift"]
        assert doc["mean_absolute_relative_shift"] <= abs(doc["max_relative_shift"])
        assert len(doc["max_relative_shift_qpoint"]) == 3 and len(doc["renormalisation_mesh"]) == 3
        assert doc["stabilised_modes"] == [] and doc["stabilised_mode_fraction"] == 0
        assert doc["harmonic_lowest_optical_frequency"] is None  # one atom per cell
        assert doc["anharmonic_free_energy_note"] == "ok"
        assert doc["free_energy"] == pytest.approx(
            doc["harmonic_free_energy"] + doc["anharmonic_free_energy"]
        )
        excluding = doc["min_frequency_excluding_acoustic_pockets"]
        assert doc["has_imaginary_modes"] == (excluding < -0.05)  # the stated rule
        assert doc["min_frequency"] <= excluding
        assert doc["harmonic_has_imaginary_modes"] is False
        assert doc["stabilised"] is False
        assert doc["commensurate_frequencies"].min() > 1.0
        assert doc["force_constants"].shape == (32, 32, 3, 3)
        assert doc["band_structure"].bands.shape[0] == 3
        assert doc["dos"].frequencies.size > 0
        provenance = doc["provenance"]
        assert provenance["seed"] == 1 and provenance["settings"]["frequency_tolerance"] == 0.15
        assert provenance["model"]["name"] == "emt" and provenance["tdphonon_version"]
        SSCHATemperatureDoc(**doc)  # the returned fields form a valid document
    HarmonicPhononDoc(**harmonic)
    # the shifts grow with temperature
    assert results[1]["mean_frequency_shift"] > results[0]["mean_frequency_shift"]
    assert results[1]["mean_relative_shift"] > results[0]["mean_relative_shift"]
    assert [r["warm_start"] for r in results] == ["harmonic", "300 K"]


def test_every_iteration_is_stored_with_its_arrays(al_run):
    flow, store, harmonic, results = al_run
    n_atoms = harmonic["n_supercell_atoms"]
    for chain, result in zip(flow.output, results, strict=True):
        stored = outputs(store, chain.uuid)
        # replaced jobs keep their outputs: one document per iteration, indices 1..n
        assert [d["index"] for d in stored] == list(range(1, result["n_iterations"] + 1))
        drawn = 0
        for number, raw in enumerate(stored, start=1):
            doc = decode(raw["output"])
            iteration = doc if isinstance(doc, SSCHAIterationDoc) else doc.final_iteration
            assert iteration.iteration == number
            if number < len(stored):
                assert isinstance(doc, SSCHAIterationDoc) and doc.stop_reason is None
                assert doc.force_constants.shape == (n_atoms, n_atoms, 3, 3)
            else:
                assert isinstance(doc, SSCHATemperatureDoc)
                assert iteration.stop_reason == "converged"
            if iteration.n_new_snapshots:
                population = iteration.population
                assert population.index == drawn
                drawn += 1
                assert population.displacements.shape == (population.n_snapshots, n_atoms, 3)
                assert population.forces.shape == population.displacements.shape
                assert population.energies.shape == (population.n_snapshots,)
                assert population.sampling_force_constants.shape == (n_atoms, n_atoms, 3, 3)
                # raw documents hold references to the data store, not the arrays
                blob = store.query_one(
                    {"uuid": chain.uuid, "index": number}, properties=["output"], load=False
                )
                path = blob["output"] if number < len(stored) else blob["output"]["final_iteration"]
                reference = path["population"]["displacements"]
                assert set(reference) >= {"blob_uuid", "store"}
                # the data store holds it packed (PackedArray), the same numbers
                (stored_blob,) = store.additional_stores["data"].query(
                    {"blob_uuid": reference["blob_uuid"]}
                )
                assert stored_blob["data"]["@class"] == "PackedArray"
                np.testing.assert_array_equal(
                    as_array(stored_blob["data"]), population.displacements
                )
            else:
                assert iteration.population is None
        assert (
            drawn == stored[-1]["output"]["final_iteration"]["continuation"]["n_populations_drawn"]
        )
    assert_documents_fit(store)


def test_packed_arrays_round_trip():
    """A packed array comes back bit for bit through JSON, monty's decoder (what jobflow's
    references use) and as_array; lists still read; an unloaded blob reference is refused."""
    array = np.random.default_rng(0).normal(size=(3, 4, 3)) * 1e-300
    packed = json.loads(json.dumps(PackedArray.pack(array)))
    for back in (MontyDecoder().process_decoded(packed), as_array(packed)):
        assert back.dtype == np.float64 and back.flags.writeable
        np.testing.assert_array_equal(back, array)
    np.testing.assert_array_equal(as_array(array.tolist()), array)
    with pytest.raises(ValueError, match="load=True"):
        as_array({"blob_uuid": "x", "store": "data"})


def test_warm_start(al_run):
    flow, store, harmonic, results = al_run
    first_300, first_800 = (decode(outputs(store, c.uuid)[0]["output"]) for c in flow.output)
    np.testing.assert_allclose(
        first_300.population.sampling_force_constants, harmonic["force_constants"]
    )
    np.testing.assert_allclose(
        first_800.population.sampling_force_constants, results[0]["force_constants"]
    )


def test_rerun_iteration_recomputes_only_that_iteration(al_run):
    """Rerun iteration 2 at 300 K from its stored inputs: same output, small next spec."""
    flow, store, harmonic, results = al_run
    chain = flow.output[0]
    stored = [decode(d["output"]) for d in outputs(store, chain.uuid)]
    previous, original = stored[0], stored[1]
    assert isinstance(original, SSCHAIterationDoc)
    rerun = sscha_iteration_job(
        harmonic=HarmonicReference.from_harmonic(harmonic, nac=False).compact(),
        temperature=300.0,
        potential=PotentialSpec("emt"),
        sscha_settings=results[0]["provenance"]["settings"],
        continuation=SSCHAContinuation(**previous.continuation.model_dump()),
    )
    rerun.set_uuid(chain.uuid)
    rerun.index = 2
    response = rerun.run(store)
    assert response.output.model_dump(exclude={"force_constants"}) == original.model_dump(
        exclude={"force_constants"}
    )
    np.testing.assert_allclose(response.output.force_constants, original.force_constants)
    # the next iteration's job (a FireWorks spec) carries pointers, not arrays
    (following,) = response.replace.jobs
    spec = json.dumps(jsanitize(following.as_dict(), strict=True, enum_values=True))
    assert len(spec) < 50_000
    assert following.index == 3 and following.uuid == chain.uuid


def test_phonon_doc_force_constants_are_mapped(phonon_doc):
    primitive, matrix, force_constants = phonon_doc_force_constants(phonon_doc)
    assert len(primitive) == 1 and round(abs(np.linalg.det(matrix))) == 8
    direct = harmonic_force_constants(make_phonopy(primitive, matrix), get_force_calculator("emt"))
    np.testing.assert_allclose(force_constants, direct.force_constants, atol=1e-6)


def test_start_from_phonon_doc_and_rerun_flow(phonon_doc, tmp_path):
    store = get_store(tmp_path / "store")
    maker = SSCHAMaker(model="emt", sscha_settings=SETTINGS)
    harmonic, (result,) = run_flow(maker.make_from_phonon_doc(phonon_doc, [300.0]), store)
    assert harmonic["provenance"]["source"] == "atomate2 PhononBSDOSDoc"
    assert harmonic["n_force_evaluations"] == 1 and harmonic["displacements"] is None
    assert result["converged"] and result["warm_start"] == "harmonic"
    assert result["mean_frequency_shift"] != 0

    # the same calculation again, in the same store: deterministic, both kept
    flow = maker.make(conventional_al(), [300.0], prev_phonon_doc=phonon_doc)
    _, (again,) = run_flow(flow, store)
    assert again["n_iterations"] == result["n_iterations"]
    assert again["free_energy"] == pytest.approx(result["free_energy"], rel=1e-9)
    for label, frequencies in result["labelled_frequencies"].items():
        np.testing.assert_allclose(again["labelled_frequencies"][label], frequencies, atol=1e-6)
    np.testing.assert_allclose(again["force_constants"], result["force_constants"], atol=1e-9)
    assert store.count({"name": {"$regex": "^sscha 300 K"}}) == 2 * result["n_iterations"]
    assert_documents_fit(store)


def test_bad_inputs_fail_when_the_flow_is_made():
    maker = SSCHAMaker(model="emt")
    disordered = Structure(Lattice.cubic(4.05), [{"Al": 0.5, "Cu": 0.5}] * 4, FCC)
    with pytest.raises(StructureError, match="disordered"):
        maker.make(disordered)
    silicon = Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    with pytest.raises(UnsupportedElementError, match="Si"):
        maker.make(silicon)
    with pytest.raises(ValueError, match="unknown SSCHA setting"):
        SSCHAMaker(model="emt", sscha_settings={"tolerance": 0.1})  # checked when made
    with pytest.raises(ValueError, match="frequency_tolerance must be positive"):
        SSCHAMaker(model="emt", sscha_settings={"frequency_tolerance": -1})
    with pytest.raises(ValueError, match="above 0 K"):
        SSCHAMaker(model="emt", sscha_settings={"statistics": "classical"}).make(
            conventional_al(), temperatures=[0, 300]
        )
    with pytest.raises(StructureError, match="not the crystal"):
        maker.make(silicon, prev_phonon_doc={"structure": conventional_al()})


def test_get_store(tmp_path):
    from jobflow import JobStore
    from maggma.stores import MemoryStore

    from tdphonon.sqlite_store import SQLiteStore

    assert isinstance(get_store(tmp_path / "embedded").docs_store, SQLiteStore)
    spec = tmp_path / "store.yaml"
    spec.write_text(
        "docs_store:\n  type: MemoryStore\n  collection_name: docs\n"
        "additional_stores:\n  data:\n    type: MemoryStore\n    collection_name: data\n"
    )
    store = get_store(spec)
    assert isinstance(store, JobStore) and isinstance(store.docs_store, MemoryStore)
    (tmp_path / "nodata.json").write_text(json.dumps({"docs_store": {"type": "MemoryStore"}}))
    with pytest.raises(ValueError, match="'data'"):
        get_store(tmp_path / "nodata.json")
    with pytest.raises(FileNotFoundError):
        get_store(tmp_path / "missing.yaml")


def test_run_locally_keeps_replaced_outputs_in_montystore(tmp_path):
    """Plain jobflow with a MontyStore keeps every index of a replaced job."""
    from jobflow import Response, job

    @job
    def countdown(n):
        return Response(output=n, replace=countdown(n - 1)) if n else n

    first = countdown(3)
    run_locally(first, store=embedded_store(tmp_path), ensure_success=True, log=False)
    store = embedded_store(tmp_path)  # reopened from disk (a JSONStore keeps only index 4)
    store.connect()
    stored = list(store.query({"uuid": first.uuid}, properties=["index", "output"]))
    assert sorted((d["index"], d["output"]) for d in stored) == [(1, 3), (2, 2), (3, 1), (4, 0)]


def test_fireworks(tmp_path, monkeypatch):
    """The same flow through FireWorks (mongomock LaunchPad): replacements become detours."""
    mongomock = pytest.importorskip("mongomock")
    gridfs = pytest.importorskip("mongomock.gridfs")
    from fireworks import FWorker, LaunchPad
    from fireworks.core.rocket_launcher import rapidfire
    from jobflow.managers.fireworks import flow_to_workflow

    monkeypatch.chdir(tmp_path)
    gridfs.enable_gridfs_integration()
    monkeypatch.setattr("fireworks.core.launchpad.MongoClient", mongomock.MongoClient)
    store = embedded_store(tmp_path / "store")
    # of the conventional cell (phonopy's convention): the 8-atom 2x2x2 primitive supercell
    maker = SSCHAMaker(
        model="emt",
        relax_maker=None,
        supercell_matrix=[[0, 1, 1], [1, 0, 1], [1, 1, 0]],
        sscha_settings=SETTINGS,
    )
    flow = maker.make(conventional_al(), temperatures=[300.0, 800.0])
    launchpad = LaunchPad(host="localhost", port=27017, name="tdphonon_test")
    launchpad.reset("", require_password=False)
    launchpad.add_wf(flow_to_workflow(flow, store=store))
    rapidfire(launchpad, FWorker(), strm_lvl="ERROR")
    fireworks = [launchpad.get_fw_by_id(i) for i in launchpad.get_fw_ids()]
    assert all(fw.state == "COMPLETED" for fw in fireworks)
    assert max(len(json.dumps(fw.to_dict(), default=str)) for fw in fireworks) < 50_000
    store.connect()
    docs = [decode(store.get_output(chain.uuid, load=True)) for chain in flow.output]
    for chain, doc in zip(flow.output, docs, strict=True):
        assert isinstance(doc, SSCHATemperatureDoc) and doc.converged
        assert store.count({"uuid": chain.uuid}) == doc.n_iterations
    # harmonic + one firework per iteration
    assert len(fireworks) == 1 + sum(doc.n_iterations for doc in docs)
    # the 800 K chain waited for the whole 300 K chain (replacements are FireWorks detours)
    first_800 = decode(outputs(store, flow.output[1].uuid)[0]["output"])
    np.testing.assert_allclose(
        first_800.population.sampling_force_constants, docs[0].force_constants
    )


def test_unexpected_error_is_a_stored_failure(tmp_path, monkeypatch, capsys):
    """A job raising what is not a failure of the material (a bug, a lost worker): the run
    exits with one line, the failure is stored with its reason, and the query says so."""
    from tdphonon.cli import main
    from tdphonon.query import CampaignResults
    from tdphonon.sscha import SSCHA

    def lost(self, *args, **kwargs):
        raise RuntimeError("worker lost\n  while sampling")

    monkeypatch.setattr(SSCHA, "step", lost)
    cif, store = tmp_path / "Al.cif", tmp_path / "store"
    conventional_al().to(filename=str(cif))
    argv = ["run", str(cif), "--model", "emt", "-T", "300", "800", "--no-relax"]
    argv += ["--min-length", "7", "--no-plots", "--store", str(store), "-q"]
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    reason = "sscha at 300 K (iteration 1): RuntimeError: worker lost while sampling"
    assert error.startswith(f"tdphonon: error: Al: {reason}") and "\n" not in error

    (row,) = CampaignResults(embedded_store(store)).materials()
    assert row["status"] == "failed" and row["reason"] == reason
    assert row["temperatures_done"] == [] and row["temperatures"] == [300.0, 800.0]
    assert main(["query", "--store", str(store), "--status", "failed", "-q"]) == 0
    assert "RuntimeError: worker lost" in capsys.readouterr().out
    assert main(["query", "--store", str(store), "--status", "completed", "-q"]) == 0
    out = capsys.readouterr().out
    assert "RuntimeError" not in out and "Al" not in out

    # without its failure document (a run killed outright), a flow that stopped before
    # its expected temperatures is not 'completed' either
    raw = embedded_store(store)
    raw.connect()
    raw.docs_store.remove_docs({"output.@class": "JobFailureDoc"})
    (row,) = CampaignResults(raw).materials()
    assert row["status"] == "running" and row["temperatures_done"] == []


def test_failed_relaxation_is_stored_through_the_api(tmp_path, monkeypatch):
    """run_flow stores the failure of atomate2's relaxation job too, and raises."""
    from tdphonon.query import CampaignResults
    from tdphonon.stores import JobFailedError

    def unavailable(*args, **kwargs):
        raise OSError("model server unavailable")

    monkeypatch.setattr("tdphonon.potentials.ase_calculator", unavailable)
    store = embedded_store(tmp_path / "store")
    flow = SSCHAMaker(model="emt", min_length=7.0).make(conventional_al(), [300.0])
    with pytest.raises(JobFailedError, match=r"^Al: relax: OSError: model server") as raised:
        run_flow(flow, store)
    (failure,) = raised.value.failures
    assert failure.stage == "relax" and failure.formula == "Al"
    assert isinstance(raised.value.__cause__, OSError)
    (row,) = CampaignResults(store).materials()
    assert row["status"] == "failed" and row["reason"].startswith("relax: OSError")
    assert store.count({"name": {"$regex": "^(harmonic|sscha)"}}) == 0
    # the flow's jobs are left as they were (no wrapper left on them)
    assert all("run" not in job.__dict__ for job in flow.jobs)
