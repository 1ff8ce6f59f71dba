"""High-throughput campaigns through FireWorks end to end (EMT fcc Al, Cu, Ni).

Without a MongoDB server, the LaunchPad and the JobStore's real ``MongoStore`` and
``GridFSStore`` classes run on one in-memory ``mongomock_ng`` client (pymongo's
``MongoClient`` is replaced by it in FireWorks and maggma; GridFS through mongomock's
GridFS integration). With ``TDPHONON_TEST_MONGODB_URI`` set (e.g.
``mongodb://localhost:27017``), the same tests also run against that server, in throw-away
databases ``tdphonon_test_*`` that are dropped afterwards.

The NaN potential is a fault injection: EMT whose forces on Ni turn NaN once they exceed
0.5 eV/Å (thermal SSCHA snapshots do, the 0.01 Å harmonic displacements do not).
"""

from __future__ import annotations

import json
import os
import uuid
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase.calculators.emt import EMT
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Poscar

from tdphonon.campaign import CampaignMaker, material_key, read_structures, submit_flows
from tdphonon.flows import SSCHAMaker
from tdphonon.query import CampaignResults, check_integrity, ensure_indexes
from tdphonon.stores import StoreUnreachableError, connect_launchpad, connect_store

pytest.importorskip("fireworks")
mongomock_ng = pytest.importorskip("mongomock_ng")

MONGODB_URI = os.environ.get("TDPHONON_TEST_MONGODB_URI", "").strip()
TEMPERATURES = [300.0, 600.0]
SETTINGS = {"frequency_tolerance": 0.15, "seed": 1}
LATTICE = {"Al": 4.05, "Cu": 3.61, "Ni": 3.56}  # Ni: 2x2x2 images >= 5 Å apart
FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def fcc(element: str, conventional: bool = False) -> Structure:
    a = LATTICE[element]
    if conventional:
        return Structure(Lattice.cubic(a), [element] * 4, FCC)
    return Structure(
        Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [element], [[0, 0, 0]]
    )


class NaNForNiEMT(EMT):
    """EMT, except that forces on Ni-containing cells above 0.5 eV/Å come out NaN."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes or [])
        forces = self.results.get("forces")
        if "Ni" in atoms.get_chemical_symbols() and np.abs(forces).max() > 0.5:
            self.results["forces"] = np.full_like(forces, np.nan)


@cache
def _faulty_calculator(model, device, batch_size):
    from tdphonon.potentials import AseCalculator, get_calculator

    if model == "emt":
        return AseCalculator(NaNForNiEMT(), name="emt")
    return get_calculator(model, device=device, batch_size=batch_size)


# -- databases ----------------------------------------------------------------------------------


class Databases:
    """Makes LaunchPads and JobStores on mongomock or on a real server."""

    def __init__(self, uri: str | None):
        self.uri = uri
        self.names: list[str] = []

    def _name(self, prefix: str) -> str:
        name = f"tdphonon_test_{prefix}_{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def launchpad(self):
        from fireworks import LaunchPad

        name = self._name("fw")
        if self.uri:
            lp = LaunchPad(host=self.uri, uri_mode=True, name=name)
        else:
            lp = LaunchPad(host="localhost", port=27017, name=name)
        lp.reset("", require_password=False)
        return lp

    def store(self):
        from jobflow import JobStore
        from maggma.stores import GridFSStore, MongoStore

        name = self._name("store")
        if self.uri:
            docs = MongoStore(name, "outputs", uri=self.uri)
            blobs = GridFSStore(name, "outputs_blobs", uri=self.uri)
        else:
            docs = MongoStore(name, "outputs", host="localhost", port=27017)
            blobs = GridFSStore(name, "outputs_blobs", host="localhost", port=27017)
        return JobStore(docs, additional_stores={"data": blobs})

    def drop(self):
        if self.uri:
            from pymongo import MongoClient

            client = MongoClient(self.uri)
            for name in self.names:
                client.drop_database(name)


@pytest.fixture(scope="module", params=["mongomock", "mongodb"])
def databases(request):
    if request.param == "mongodb":
        if not MONGODB_URI:
            pytest.skip("set TDPHONON_TEST_MONGODB_URI to run against a real MongoDB server")
        dbs = Databases(MONGODB_URI)
        yield dbs
        dbs.drop()
        return
    import mongomock_ng.gridfs

    mongomock_ng.gridfs.enable_gridfs_integration()
    client = mongomock_ng.MongoClient()

    def shared_client(*args, **kwargs):
        return client

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("fireworks.core.launchpad.MongoClient", shared_client)
        patch.setattr("maggma.stores.mongolike.MongoClient", shared_client)
        patch.setattr("maggma.stores.gridfs.MongoClient", shared_client)
        yield Databases(None)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("campaign")


def campaign_maker(**kwargs) -> CampaignMaker:
    # min_length 5 Å: the 2x2x2 supercell of the primitive cell, whatever cell is given
    sscha = SSCHAMaker(model="emt", min_length=5.0, sscha_settings=SETTINGS)
    return CampaignMaker(
        sscha_maker=sscha, temperatures=kwargs.pop("temperatures", TEMPERATURES), **kwargs
    )


def launch_all(launchpad, workdir: Path) -> dict[str, int]:
    """CPU and GPU workers take turns until nothing is READY; launches per worker."""
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    workers = [FWorker(name="cpu-node", category="cpu"), FWorker(name="gpu-node", category="gpu")]
    counts = {w.name: 0 for w in workers}
    os.chdir(workdir)
    while launchpad.fireworks.count_documents({"state": "READY"}):
        for worker in workers:
            before = launchpad.launches.count_documents({"fworker.name": worker.name})
            rapidfire(launchpad, worker, strm_lvl="ERROR")
            counts[worker.name] += (
                launchpad.launches.count_documents({"fworker.name": worker.name}) - before
            )
    return counts


@pytest.fixture(scope="module")
def campaign(databases, workdir):
    """Al (CIF), Cu (POSCAR), Ni (JSON list) submitted, run by CPU + GPU workers."""
    folder = workdir / "structures"
    folder.mkdir()
    fcc("Al", conventional=True).to(filename=str(folder / "Al.cif"))
    Poscar(fcc("Cu")).write_file(folder / "POSCAR_Cu")
    (folder / "nickel.json").write_text(json.dumps([fcc("Ni").as_dict()]))
    structures = read_structures([folder])
    launchpad, store = databases.launchpad(), databases.store()
    maker = campaign_maker()
    report = submit_flows(structures, maker, launchpad, store=store, batch_size=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("tdphonon.potentials.factory.cached_calculator", _faulty_calculator)
        counts = launch_all(launchpad, workdir)
    store.connect()
    return {
        "structures": structures,
        "launchpad": launchpad,
        "store": store,
        "maker": maker,
        "report": report,
        "counts": counts,
        "results": CampaignResults(store, launchpad),
    }


# -- tests --------------------------------------------------------------------------------------


def test_read_structures_and_keys(tmp_path):
    fcc("Al", conventional=True).to(filename=str(tmp_path / "Al.cif"))
    Poscar(fcc("Al")).write_file(tmp_path / "POSCAR")
    (tmp_path / "two.json").write_text(json.dumps([fcc("Cu").as_dict(), fcc("Ni").as_dict()]))
    (tmp_path / "notes.txt").write_text("not a structure")
    structures = read_structures([tmp_path])
    assert sorted(name for name, _ in structures) == ["Al", "POSCAR", "two-0", "two-1"]
    settings = campaign_maker().settings()
    keys = {name: material_key(s, settings) for name, s in structures}
    assert keys["Al"] == keys["POSCAR"]  # conventional CIF and primitive POSCAR: one crystal
    # --supercell applies to the cell given: 2x2x2 of the conventional cell is 32 atoms, of
    # the primitive one 8; the conventional matrix of the primitive 2x2x2 is the same run
    conventional, primitive = fcc("Al", conventional=True), fcc("Al")
    explicit = dict(settings, sscha={**settings["sscha"], "supercell_matrix": [2, 2, 2]})
    assert material_key(conventional, explicit) != material_key(primitive, explicit)
    matrix = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]
    same = dict(explicit, sscha={**explicit["sscha"], "supercell_matrix": matrix})
    assert material_key(conventional, same) == material_key(primitive, explicit)
    assert len(set(keys.values())) == 3
    other = campaign_maker(temperatures=[300.0]).settings()
    assert material_key(fcc("Al"), other) != keys["Al"]
    from tdphonon.structures import StructureError

    with pytest.raises(StructureError, match="not found"):
        read_structures([tmp_path / "missing.cif"])
    os.environ.pop("MP_API_KEY", None)
    os.environ.pop("PMG_MAPI_KEY", None)
    with pytest.raises(StructureError, match="API key"):
        read_structures(["mp-149"])


def test_routing_and_submission(campaign):
    report, launchpad = campaign["report"], campaign["launchpad"]
    assert len(report.submitted) == 3 and not report.skipped and not report.invalid
    categories = {}
    for fw in launchpad.fireworks.find({}, {"name": 1, "spec._category": 1}):
        kind = "relax" if fw["name"].startswith("relax") else fw["name"].split()[0]
        categories.setdefault(kind, set()).add(fw["spec"].get("_category"))
    # the relaxation is light; harmonic and every SSCHA iteration (replacements too) heavy
    assert categories["relax"] == {"cpu"}
    assert categories["harmonic"] == {"gpu"} and categories["sscha"] == {"gpu"}
    assert campaign["counts"]["cpu-node"] == 3  # the three relaxations, nothing else
    assert campaign["counts"]["gpu-node"] > 3
    for launch in launchpad.launches.find({}, {"fworker.name": 1, "fw_id": 1}):
        fw = launchpad.fireworks.find_one({"fw_id": launch["fw_id"]}, {"spec._category": 1})
        assert launch["fworker"]["name"] == f"{fw['spec']['_category']}-node"


def test_resubmission_is_skipped(campaign):
    launchpad, store = campaign["launchpad"], campaign["store"]
    n_workflows = launchpad.workflows.count_documents({})
    again = [("Al-again", fcc("Al")), *campaign["structures"], ("Cu-twice", fcc("Cu"))]
    report = submit_flows(again, campaign["maker"], launchpad, store=store)
    assert not report.submitted and len(report.skipped) == 5
    assert launchpad.workflows.count_documents({}) == n_workflows
    # found through the store alone too (e.g. a new launchpad for the same results)
    report = submit_flows(again[:1], campaign["maker"], None, store=store, dry_run=True)
    assert [name for name, _ in report.skipped] == ["Al-again"]
    # other settings: a new material key, submitted
    report = submit_flows(again[:1], campaign_maker(temperatures=[300.0]), None, dry_run=True)
    assert [name for name, _ in report.submitted] == ["Al-again"]


def test_statuses_and_failure_reason(campaign):
    results = campaign["results"]
    rows = {row["formula"]: row for row in results.materials()}
    assert rows["Al"]["status"] == "completed" and rows["Cu"]["status"] == "completed"
    assert rows["Al"]["temperatures_done"] == TEMPERATURES
    nickel = rows["Ni"]
    assert nickel["status"] == "failed"
    assert "sscha at 300 K (iteration 1): NonFiniteForcesError" in nickel["reason"]
    assert [r["formula"] for r in results.materials(status="failed")] == ["Ni"]
    # the failure is a stored document, not just a FireWorks state
    failure = campaign["store"].query_one({"output.@class": "JobFailureDoc"})
    assert failure["output"]["error_type"] == "NonFiniteForcesError"
    assert failure["metadata"]["formula"] == "Ni"
    # the 600 K chain of Ni was stopped, not run; Al and Cu went on to the end
    lp = campaign["launchpad"]
    states = {
        fw["name"]: fw["state"]
        for fw in lp.fireworks.find({"spec.formula": "Ni"}, {"name": 1, "state": 1})
    }
    assert states["sscha 600 K iteration 1"] in ("DEFUSED", "WAITING")
    assert not lp.fireworks.count_documents(
        {"spec.formula": {"$ne": "Ni"}, "state": {"$ne": "COMPLETED"}}
    )


def test_everything_is_stored_and_read_back(campaign):
    """Every iteration's snapshots and forces, force constants and phonon objects."""
    from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
    from pymatgen.phonon.dos import PhononDos

    from tdphonon.schemas import HarmonicPhononDoc, SSCHAIterationDoc, SSCHATemperatureDoc

    results, store = campaign["results"], campaign["store"]
    for row in results.materials(status="completed"):
        outputs = results.outputs(row["key"])
        harmonic = [o["output"] for o in outputs if isinstance(o["output"], HarmonicPhononDoc)]
        assert len(harmonic) == 1
        assert harmonic[0].force_constants.shape == (8, 8, 3, 3)
        assert harmonic[0].forces.shape[1:] == (8, 3)
        assert isinstance(harmonic[0].band_structure, PhononBandStructureSymmLine)
        for temperature in TEMPERATURES:
            chain = [
                o["output"]
                for o in outputs
                if getattr(o["output"], "temperature", None) == temperature
            ]
            final = chain[-1]
            assert isinstance(final, SSCHATemperatureDoc) and final.converged
            iterations = [*chain[:-1], final.final_iteration]
            assert all(isinstance(i, SSCHAIterationDoc) for i in chain[:-1])
            assert [i.iteration for i in iterations] == list(range(1, final.n_iterations + 1))
            drawn = 0
            for iteration in chain[:-1]:
                assert iteration.force_constants.shape == (8, 8, 3, 3)
                assert np.isfinite(iteration.force_constants).all()
                if iteration.population is not None:
                    n = iteration.population.n_snapshots
                    assert iteration.population.displacements.shape == (n, 8, 3)
                    assert iteration.population.forces.shape == (n, 8, 3)
                    assert np.abs(iteration.population.forces).max() > 0.01
                    drawn += n
            if final.final_iteration.population is not None:
                drawn += final.final_iteration.population.n_snapshots
            assert drawn == final.n_force_evaluations
            assert final.force_constants.shape == (8, 8, 3, 3)
            assert isinstance(final.band_structure, PhononBandStructureSymmLine)
            assert isinstance(final.dos, PhononDos)
    # the arrays live in the GridFS data store, the documents only point to them
    blobs = store.additional_stores["data"]
    assert blobs.count() > 20
    docs = store.docs_store
    assert docs.count({"output.force_constants.blob_uuid": {"$exists": True}}) > 10
    assert check_integrity(store) == {"missing_blobs": [], "orphan_blobs": []}


def test_query_table_and_export(campaign, tmp_path):
    results = campaign["results"]
    table = results.table()
    done = table[table["status"] == "completed"]
    assert sorted(set(done["formula"])) == ["Al", "Cu"]
    assert len(done) == 4 and set(done["temperature"]) == set(TEMPERATURES)
    al = done[done["formula"] == "Al"].sort_values("temperature")
    assert (al["free_energy"].diff().dropna() < 0).all()  # F decreases with T
    assert (done["mean_frequency_shift"] > 0).all()  # EMT fcc metals stiffen
    assert (done["converged"]).all()
    shifts = json.loads(al.iloc[0]["frequency_shifts"])
    assert "X" in shifts or "L" in shifts
    nickel = table[table["formula"] == "Ni"]
    assert list(nickel["status"]) == ["failed"]
    frequencies = results.frequencies(al.iloc[0]["key"])
    assert sorted(frequencies) == TEMPERATURES
    results.export(tmp_path / "table.csv")
    results.export(tmp_path / "table.json")
    assert len(pd.read_csv(tmp_path / "table.csv")) == len(table)
    assert len(json.loads((tmp_path / "table.json").read_text())) == len(table)
    assert set(results.table(formula="Cu")["formula"]) == {"Cu"}
    indexes = ensure_indexes(campaign["store"])
    assert indexes["metadata.tdphonon_key"] and indexes["output.temperature"]


def test_query_embedded_store(tmp_path):
    """The same API on the embedded MontyDB store (runs without FireWorks)."""
    from tdphonon.stores import embedded_store, run_flow

    store = embedded_store(tmp_path / "store")
    maker = campaign_maker(temperatures=[300.0], heavy_category=None, light_category=None)
    flow = maker.make(fcc("Al"), "aluminium")
    run_flow(flow, store)
    results = CampaignResults(embedded_store(tmp_path / "store"))
    (row,) = results.materials()
    assert row["material"] == "aluminium" and row["status"] == "completed"
    table = results.table()
    assert list(table["temperature"]) == [300.0] and table["free_energy"].notna().all()
    outputs = results.outputs(row["key"])
    assert any(getattr(o["output"], "population", None) is not None for o in outputs)


def test_killed_worker_resumes(databases, workdir):
    """A worker dies during an SSCHA iteration: detect_lostruns + rerun recompute only it."""
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    from tdphonon.jobs.common import get_force_calculator

    launchpad, store = databases.launchpad(), databases.store()
    maker = campaign_maker(temperatures=[300.0], heavy_category=None, light_category=None)
    submit_flows([("Al", fcc("Al"))], maker, launchpad, store=store)
    os.chdir(workdir)
    rapidfire(launchpad, FWorker(), nlaunches=3, strm_lvl="ERROR")  # relax, harmonic, it. 1
    # the worker takes the next iteration and is killed: its launch stays RUNNING
    fw, _launch_id = launchpad.checkout_fw(FWorker(name="doomed"), str(workdir))
    assert fw.name == "sscha 300 K iteration 2" and fw.state == "RUNNING"
    _lost_launches, lost_fws, _ = launchpad.detect_lostruns(expiration_secs=0)
    assert lost_fws == [fw.fw_id]
    launchpad.detect_lostruns(expiration_secs=0, rerun=True)
    assert launchpad.get_fw_by_id(fw.fw_id).state == "READY"
    calculator = get_force_calculator("emt")
    before = calculator.n_force_evaluations
    rapidfire(launchpad, FWorker(), strm_lvl="ERROR")
    spent = calculator.n_force_evaluations - before
    store.connect()
    results = CampaignResults(store, launchpad)
    (row,) = results.materials()
    assert row["status"] == "completed"
    outputs = results.outputs(row["key"], load=False)
    chain = [o for o in outputs if o["name"].startswith("sscha")]
    # one stored output per iteration; the finished ones were not run again
    assert len({(o["uuid"], o["index"]) for o in chain}) == len(chain)
    assert all(
        len(launchpad.get_fw_by_id(i).launches) == 1
        for i in launchpad.get_fw_ids()
        if i != fw.fw_id
    )
    final = results.outputs(row["key"])[-1]["output"]
    first = next(
        o["output"] for o in results.outputs(row["key"]) if o["name"] == "sscha 300 K iteration 1"
    )
    # force evaluations after the restart: exactly the snapshots of iterations >= 2
    assert spent == final.n_force_evaluations - first.n_new_snapshots


def test_unreachable_database(tmp_path, monkeypatch):
    from jobflow import JobStore
    from maggma.stores import GridFSStore, MongoStore

    store = JobStore(
        MongoStore(
            "tdphonon",
            "outputs",
            host="127.0.0.1",
            port=9,
            mongoclient_kwargs={"serverSelectionTimeoutMS": 100},
        ),
        additional_stores={"data": GridFSStore("tdphonon", "blobs", host="127.0.0.1", port=9)},
    )
    with pytest.raises(StoreUnreachableError, match=r"mongodb://127\.0\.0\.1:9/tdphonon.* after 2"):
        connect_store(store, retries=2, delay=0.01, timeout_ms=100)
    launchpad_file = tmp_path / "my_launchpad.yaml"
    launchpad_file.write_text("host: 127.0.0.1\nport: 9\nname: fireworks\n")
    with pytest.raises(
        StoreUnreachableError, match=r"launchpad database mongodb://127\.0\.0\.1:9/fireworks"
    ):
        connect_launchpad(launchpad_file, retries=1, timeout_ms=100)
    # the command line: one line, exit code 2
    from tdphonon.cli import main

    store_file = tmp_path / "jobflow.yaml"
    store_file.write_text(
        "JOB_STORE:\n  docs_store: {type: MongoStore, database: t, collection_name: o, host: 127.0.0.1, port: 9}\n"
        "  additional_stores:\n    data: {type: GridFSStore, database: t, collection_name: b, host: 127.0.0.1, port: 9}\n"
    )
    assert main(["query", "--store", str(store_file), "--retries", "1", "--timeout", "0.1"]) == 2
    # tdphonon run / kappa connect the store before any job: retried, then one line
    monkeypatch.setattr("tdphonon.stores.time.sleep", lambda seconds: None)
    slow_file = tmp_path / "jobflow_timeout.yaml"
    slow_file.write_text(
        store_file.read_text().replace(
            "port: 9}", "port: 9, mongoclient_kwargs: {serverSelectionTimeoutMS: 100}}"
        )
    )
    al = Path(__file__).parents[1] / "examples" / "Al_fcc.cif"
    assert main(["run", str(al), "--model", "emt", "--store", str(slow_file), "-q"]) == 2
    assert (
        main(
            [
                "submit",
                str(tmp_path),
                "--launchpad",
                str(launchpad_file),
                "--retries",
                "1",
                "--timeout",
                "0.1",
            ]
        )
        == 2
    )


def test_database_lost_mid_write(databases, workdir, monkeypatch):
    """The data store fails while a job writes: the FireWork fizzles, the half-written
    output is detected, and a rerun completes with nothing missing."""
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire
    from maggma.stores import GridFSStore
    from pymongo.errors import AutoReconnect

    launchpad, store = databases.launchpad(), databases.store()
    maker = campaign_maker(temperatures=[300.0], heavy_category=None, light_category=None)
    maker.sscha_maker.relax_maker = None
    submit_flows([("Cu", fcc("Cu"))], maker, launchpad, store=store)
    original = GridFSStore.update

    def unreachable(self, *args, **kwargs):
        raise AutoReconnect("connection closed")

    os.chdir(workdir)
    monkeypatch.setattr(GridFSStore, "update", unreachable)
    rapidfire(launchpad, FWorker(), nlaunches=1, strm_lvl="CRITICAL")  # the harmonic job
    (fizzled,) = launchpad.get_fw_ids({"state": "FIZZLED"})
    store.connect()
    report = check_integrity(store)
    assert len(report["missing_blobs"]) == 1  # jobflow wrote the document, not its arrays
    results = CampaignResults(store, launchpad)
    (row,) = results.materials()
    assert row["status"] == "failed" and "AutoReconnect" in row["reason"]
    check_integrity(store, repair=True)
    assert store.docs_store.count() == 0
    monkeypatch.setattr(GridFSStore, "update", original)
    launchpad.rerun_fw(fizzled)
    rapidfire(launchpad, FWorker(), strm_lvl="ERROR")
    assert CampaignResults(store, launchpad).materials()[0]["status"] == "completed"
    assert check_integrity(store) == {"missing_blobs": [], "orphan_blobs": []}


def test_command_line(campaign, databases, tmp_path, capsys):
    """tdphonon submit (idempotent) and tdphonon query on the campaign's databases."""
    from tdphonon.cli import main

    if databases.uri:
        pytest.skip("the command-line files below name the mongomock databases")
    folder = tmp_path / "structures"
    folder.mkdir()
    Poscar(fcc("Cu")).write_file(folder / "POSCAR")
    launchpad = databases.launchpad()
    launchpad_file = tmp_path / "my_launchpad.yaml"
    launchpad_file.write_text(f"host: localhost\nport: 27017\nname: {launchpad.name}\n")
    argv = ["submit", str(folder), "--model", "emt", "-T", "300", "--supercell", "2", "2", "2"]
    argv += ["--batch-size", "4", "--launchpad"]
    assert main([*argv, str(launchpad_file), "--json", str(tmp_path / "r.json"), "-q"]) == 0
    assert "1 submitted, 0 skipped" in capsys.readouterr().out
    fw = launchpad.fireworks.find_one({"name": "harmonic"})
    assert fw["spec"]["_category"] == "gpu" and fw["spec"]["formula"] == "Cu"
    # the SSCHA options are those of tdphonon run, and reach the jobs
    harmonic = fw["spec"]["_tasks"][0]["job"]["function_kwargs"]
    assert harmonic["supercell_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert harmonic["potential"]["batch_size"] == 4
    assert main([*argv, str(launchpad_file), "-q"]) == 0
    assert "0 submitted, 1 skipped" in capsys.readouterr().out
    assert launchpad.workflows.count_documents({}) == 1
    # query the campaign's store through a jobflow.yaml
    store = campaign["store"]
    store_file = tmp_path / "jobflow.yaml"
    store_file.write_text(
        "JOB_STORE:\n"
        f"  docs_store: {{type: MongoStore, database: {store.docs_store.database}, "
        "collection_name: outputs}\n"
        "  additional_stores:\n"
        f"    data: {{type: GridFSStore, database: {store.docs_store.database}, "
        "collection_name: outputs_blobs}\n"
    )
    csv = tmp_path / "results.csv"
    assert main(["query", "--store", str(store_file), "--results", "--csv", str(csv), "-q"]) == 0
    out = capsys.readouterr().out
    assert "2 completed, 1 failed" in out and len(pd.read_csv(csv)) == 5
    assert main(["query", "--store", str(store_file), "--status", "failed", "-q"]) == 0
    assert "NonFiniteForcesError" in capsys.readouterr().out


def test_workflow_templates(tmp_path, monkeypatch, capsys):
    """The cluster templates load with FireWorks / jobflow; the campaign script runs."""
    import importlib.util

    from fireworks import FWorker, LaunchPad
    from fireworks.utilities.fw_serializers import load_object_from_file

    from tdphonon.stores import store_from_file

    folder = Path(__file__).resolve().parents[1] / "workflows"
    store = store_from_file(folder / "jobflow.yaml")
    assert type(store.docs_store).__name__ == "MongoStore"
    assert type(store.additional_stores["data"]).__name__ == "GridFSStore"
    assert store.additional_stores["data"].compression
    assert LaunchPad.from_file(str(folder / "my_launchpad.yaml")).name == "tdphonon_fireworks"
    assert FWorker.from_file(str(folder / "my_fworker_gpu.yaml")).category == "gpu"
    assert FWorker.from_file(str(folder / "my_fworker_cpu.yaml")).category == "cpu"
    for name in ("my_qadapter.yaml", "my_qadapter_cpu.yaml"):
        script = load_object_from_file(str(folder / name)).get_script_str(str(tmp_path))
        assert "#SBATCH --partition" in script and "rlaunch" in script
    spec = importlib.util.spec_from_file_location("campaign_script", folder / "campaign.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "batch.json").write_text(json.dumps([fcc(e).as_dict() for e in LATTICE]))
    monkeypatch.setenv("TDPHONON_MODEL", "emt")
    assert script.main(["submit", str(tmp_path / "batch.json"), "--dry-run"]) == 0
    assert "3 submitted, 0 skipped" in capsys.readouterr().out


def test_kappa_campaign(databases, workdir):
    """--kappa: fc3 forces routed to the GPU workers, phono3py's solve to the CPU ones;
    the material is complete only with its conductivity, which the table reports."""
    from tdphonon.flows.conductivity import ThermalConductivityMaker

    launchpad, store = databases.launchpad(), databases.store()
    maker = campaign_maker(
        temperatures=[300.0],
        kappa=True,
        conductivity_maker=ThermalConductivityMaker(mesh=(5, 5, 5), fc3_supercell_matrix=[3, 3, 3]),
    )
    maker.sscha_maker.relax_maker = None
    report = submit_flows([("Al", fcc("Al"))], maker, launchpad, store=store)
    assert len(report.submitted) == 1
    categories = {
        fw["name"]: fw["spec"].get("_category")
        for fw in launchpad.fireworks.find({}, {"name": 1, "spec._category": 1})
    }
    fc3 = [c for name, c in categories.items() if "fc3" in name]
    kappa = [c for name, c in categories.items() if name.startswith("kappa")]
    assert fc3 == ["gpu"] and kappa and set(kappa) == {"cpu"}
    launch_all(launchpad, workdir)
    results = CampaignResults(store, launchpad)
    (row,) = results.materials()
    assert row["status"] == "completed", row["reason"]
    table = results.table()
    assert table.loc[0, "kappa_renormalized"] > 0 and table.loc[0, "kappa_harmonic"] > 0


def test_finetune_campaign(databases, workdir, shared_dir, m3gnet_path, tmp_path, monkeypatch):
    """--finetune-data: one shared fine-tuning workflow; the materials are submitted once
    it has completed and every SSCHA job uses the fine-tuned model from the store."""
    from fireworks import FWorker
    from fireworks.core.rocket_launcher import rapidfire

    from tdphonon.flows.finetune import FineTuneMaker

    monkeypatch.setenv("TDPHONON_MODEL_CACHE", str(tmp_path / "cache"))
    data = shared_dir / "data" / "phonon-forcesets"
    launchpad, store = databases.launchpad(), databases.store()
    sscha = SSCHAMaker(
        model=str(m3gnet_path),
        device="cpu",
        relax_maker=None,
        supercell_matrix=[[0, 1, 1], [1, 0, 1], [1, 1, 0]],  # of NaCl.cif: 16 atoms
        sscha_settings={"frequency_tolerance": 0.3, "max_snapshots": 32, "seed": 1},
    )
    maker = CampaignMaker(
        sscha_maker=sscha,
        temperatures=[300.0],
        finetune_data=[str(data / "NaCl"), str(data / "MgO")],
        finetune_maker=FineTuneMaker(
            base_model=str(m3gnet_path),
            validation=["MgO"],
            settings={"max_epochs": 1, "batch_size": 2},
        ),
        heavy_category=None,
        light_category=None,
    )
    nacl = Structure.from_file(Path(__file__).resolve().parents[1] / "examples" / "NaCl.cif")
    structures = [("NaCl", nacl)]
    report = submit_flows(structures, maker, launchpad, store=store)
    assert report.finetune["submitted"] and report.deferred == ["NaCl"]
    assert not report.submitted
    assert submit_flows(structures, maker, launchpad, store=store).finetune["submitted"] is False
    os.chdir(workdir)
    rapidfire(launchpad, FWorker(), strm_lvl="ERROR")  # the fine-tuning
    report = submit_flows(structures, maker, launchpad, store=store)
    assert report.finetune["state"] == "COMPLETED" and len(report.submitted) == 1
    rapidfire(launchpad, FWorker(), strm_lvl="ERROR")
    results = CampaignResults(store, launchpad)
    (row,) = results.materials()  # the fine-tuning is not listed as a material
    assert row["status"] in ("completed", "not converged"), row["reason"]
    outputs = results.outputs(row["key"])
    final = outputs[-1]["output"]
    tuned = store.query_one({"metadata.tdphonon_finetune_key": {"$exists": True}})
    assert final.provenance["model"]["path"] is not None
    assert tuned["output"]["model"]["sha256"] in final.provenance["model"]["path"]
    report = submit_flows(structures, maker, launchpad, store=store)
    assert not report.submitted and len(report.skipped) == 1


class AlwaysNaNEMT(EMT):
    """EMT whose forces are always NaN (a broken potential)."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=None):
        super().calculate(atoms, properties, system_changes or [])
        self.results["forces"] = np.full_like(self.results["forces"], np.nan)


def test_harmonic_failure_is_stored(tmp_path, monkeypatch):
    """NaN forces already in the harmonic job: a stored reason, no SSCHA job runs."""
    from tdphonon.potentials import AseCalculator
    from tdphonon.schemas import JobFailureDoc
    from tdphonon.stores import embedded_store, run_flow

    broken = AseCalculator(AlwaysNaNEMT(), name="emt")
    monkeypatch.setattr("tdphonon.potentials.factory.cached_calculator", lambda *args: broken)
    store = embedded_store(tmp_path / "store")
    maker = campaign_maker(heavy_category=None, light_category=None)
    maker.sscha_maker.relax_maker = None
    flow = maker.make(fcc("Cu"), "copper")
    harmonic, results = run_flow(flow, store, ensure_success=False)
    assert results == []
    failure = JobFailureDoc(**{k: v for k, v in harmonic.items() if not k.startswith("@")})
    assert failure.stage == "harmonic" and failure.error_type == "NonFiniteForcesError"
    (row,) = CampaignResults(store).materials()
    assert row["status"] == "failed" and row["reason"].startswith("harmonic: NonFiniteForces")
    assert store.count({"name": {"$regex": "^sscha"}}) == 0
