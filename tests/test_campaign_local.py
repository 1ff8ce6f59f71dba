"""Campaigns on one machine: ``tdphonon run A.cif B.vasp folder/ collection.json.xz ...``.

End to end with EMT on embedded stores: fcc Al and Cu finish; an Al crystal expanded until
its atoms no longer interact fails in the harmonic job (stored, with its reason); NaCl
cannot be made into a flow (EMT knows neither element). The campaign goes on past both,
a rerun skips what is in the store, and the selection options pick structures from
collections in phonondb's ``unitcells.json.xz`` format.
"""

from __future__ import annotations

import json
import lzma
import shutil
import time
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.vasp import Poscar

from tdphonon.campaign import StructureFilter, read_structures
from tdphonon.cli import build_parser, main
from tdphonon.cli.options import structure_filter
from tdphonon.query import CampaignResults
from tdphonon.stores import KEY_FIELD, get_store
from tdphonon.structures import StructureError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: Small and fast: EMT, one temperature, the 8-atom supercell, loose tolerance.
FAST = ["--model", "emt", "-T", "300", "--no-relax", "--min-length", "5", "--tolerance", "0.2"]
FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def fcc(element: str, a: float, conventional: bool = False) -> Structure:
    if conventional:
        return Structure(Lattice.cubic(a), [element] * 4, FCC)
    return Structure(
        Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]]), [element], [[0, 0, 0]]
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder: Al (CIF), Cu (POSCAR), isolated Al atoms (JSON), NaCl (CIF)."""
    folder = tmp_path_factory.mktemp("inputs")
    fcc("Al", 4.05, conventional=True).to(filename=str(folder / "Al.cif"))
    Poscar(fcc("Cu", 3.61)).write_file(folder / "Cu.vasp")
    # 14 Å apart, beyond EMT's cutoff: no force constants, the harmonic job fails
    (folder / "isolated.json").write_text(json.dumps(fcc("Al", 14.0).as_dict()))
    shutil.copy(EXAMPLES / "NaCl.cif", folder / "NaCl.cif")
    return folder


def _rows(path: Path) -> dict[str, dict]:
    return {row["material"]: row for row in json.loads(path.read_text())["rows"]}


def _documents(store_path: Path) -> dict[str, int]:
    store = get_store(store_path)
    store.connect()
    counts: dict[str, int] = {}
    for doc in store.docs_store.query({}, properties=["metadata"]):
        key = doc["metadata"][KEY_FIELD]
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.fixture(scope="module")
def pool_run(inputs, tmp_path_factory) -> dict:
    """The campaign of ``inputs`` in 2 worker processes (one store for the module)."""
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("pool")
    store, report = folder / "store", folder / "campaign.json"
    argv = ["run", str(inputs), *FAST, "--store", str(store), "--json", str(report)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--workers", "2"])
    return {"argv": argv, "code": code, "out": out.getvalue(), "store": store, "report": report}


def test_campaign_in_worker_processes(pool_run):
    assert pool_run["code"] == 0  # failed structures do not fail the command
    rows = _rows(pool_run["report"])
    assert rows["Al"]["status"] == rows["Cu"]["status"] == "completed"
    assert rows["Al"]["wall_s"] > 0 and rows["Al"]["cpu_s"] > 0 and not rows["Al"]["skipped"]
    assert rows["isolated"]["status"] == "failed"
    assert rows["isolated"]["failure"].startswith("harmonic: ")
    assert rows["NaCl"]["status"] == "failed"
    assert rows["NaCl"]["failure"] == "invalid: UnsupportedElementError"
    assert "not supported by the potential 'emt'" in rows["NaCl"]["reason"]
    totals = json.loads(pool_run["report"].read_text())["totals"]
    assert totals == {"completed": 2, "failed": 2, "skipped": 0, "structures": 4}
    out = pool_run["out"]
    assert "campaign: 4 structures, 2 worker(s)" in out
    assert "2 done (2 completed, 0 not converged; 0 skipped" in out
    assert "invalid: UnsupportedElementError: 1 (NaCl)" in out
    assert "harmonic: " in out and "(isolated)" in out
    # in the store: both crystals with their results, the failure with its reason
    store = get_store(pool_run["store"])
    materials = {row["material"]: row for row in CampaignResults(store).materials()}
    assert set(materials) == {"Al", "Cu", "isolated"}  # NaCl never became a flow
    assert materials["Al"]["temperatures_done"] == [300.0]
    assert materials["isolated"]["status"] == "failed"
    assert materials["isolated"]["reason"] == rows["isolated"]["reason"]
    assert materials["isolated"]["reason"].startswith("harmonic: ")


def test_rerun_skips_what_is_in_the_store(pool_run, capsys):
    argv, report = pool_run["argv"], pool_run["report"]
    first, documents = _rows(report), _documents(pool_run["store"])
    # nothing is computed again (no new documents, seconds), NaCl is checked again
    start = time.perf_counter()
    assert main([*argv, "--workers", "2"]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    rows = _rows(report)
    skipped = [rows[name]["skipped"] for name in ("Al", "Cu", "isolated", "NaCl")]
    assert skipped == [True, True, True, False]
    assert rows["Al"]["status"] == "completed" and rows["isolated"]["status"] == "failed"
    assert rows["isolated"]["reason"] == first["isolated"]["reason"]
    assert "2 skipped: done before" in out and "rerun with --retry-failed" in out
    assert _documents(pool_run["store"]) == documents  # no force evaluated again
    assert elapsed < 60, elapsed  # about 2 s on an idle machine (no worker is started)
    # --retry-failed: the failure runs again and its documents replace the earlier ones
    assert main([*argv, "--workers", "1", "--retry-failed"]) == 0  # here: no worker to start
    rows = _rows(report)
    assert not rows["isolated"]["skipped"] and rows["isolated"]["status"] == "failed"
    assert rows["Al"]["skipped"]
    assert _documents(pool_run["store"]) == documents


def test_campaign_then_analyze(pool_run, tmp_path, capsys):
    """End to end: the campaign's store exported and analysed; the failure is in the table."""
    export, summary = tmp_path / "campaign.json.xz", tmp_path / "analysis.json"
    store = str(pool_run["store"])
    argv = ["analyze", "--store", store, "--export", str(export), "--no-plots", "-q"]
    assert main([*argv, "--folds", "2", "--json", str(summary)]) == 0
    rows = {e["material"]: e for e in json.loads(summary.read_text())["compounds"]}
    assert rows["Al"]["status"] == "completed" and 0 < rows["Al"]["sigma_a"] < 1
    assert rows["isolated"]["status"] == "failed" and rows["isolated"]["sigma_a"] is None
    assert rows["isolated"]["reason"].startswith("harmonic: ")
    capsys.readouterr()
    again = tmp_path / "again.json"
    assert main(["analyze", "--from", str(export), "--no-plots", "-q", "--json", str(again)]) == 0
    assert (
        json.loads(again.read_text())["compounds"] == json.loads(summary.read_text())["compounds"]
    )


def test_campaign_in_one_process_matches(inputs, pool_run, tmp_path, capsys, caplog):
    """--workers 1 runs here, without the per-material log lines, with the same keys and
    numbers as the worker processes."""
    import logging

    caplog.set_level(logging.INFO)
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("Al.cif", "isolated.json"):
        shutil.copy(inputs / name, folder / name)
    store, report = tmp_path / "store", tmp_path / "campaign.json"
    argv = ["run", str(folder), *FAST, "--store", str(store), "--json", str(report)]
    assert main([*argv, "--workers", "1"]) == 0
    rows = _rows(report)
    assert rows["Al"]["status"] == "completed" and rows["isolated"]["status"] == "failed"
    assert "harmonic phonons of" not in caplog.text  # the jobs' per-material lines
    assert "campaign: 2 structures, 1 worker(s)" in capsys.readouterr().out
    assert rows["Al"]["key"] == _rows(pool_run["report"])["Al"]["key"]
    here = CampaignResults(get_store(store)).table().set_index("material")
    pool = CampaignResults(get_store(pool_run["store"])).table().set_index("material")
    for column in ("free_energy", "mean_frequency_shift", "n_force_evaluations"):
        assert here.loc["Al", column] == pytest.approx(pool.loc["Al", column], rel=1e-10)


def test_one_structure_is_not_a_campaign(tmp_path):
    from tdphonon.cli.run import is_campaign

    parser = build_parser()
    al = str(EXAMPLES / "Al_fcc.cif")
    single = tmp_path / "one.json"
    single.write_text(json.dumps(fcc("Al", 4.05).as_dict()))
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([fcc("Al", 4.05).as_dict()]))

    def campaign(*argv: str) -> bool:
        return is_campaign(parser.parse_args(["run", *argv]))

    assert not campaign(al) and not campaign(str(single)) and not campaign("missing.cif")
    assert campaign(al, al) and campaign(str(tmp_path)) and campaign(str(listed))
    assert campaign(al, "--workers", "2") and campaign(al, "--retry-failed")
    assert campaign(al, "--max-atoms", "4") and campaign("mp-149")


# -- selection --------------------------------------------------------------------------------


def _record(mpid: str, structure: Structure, spg: str, spg_num: int) -> dict:
    return {
        "mpid": mpid,
        "formula": structure.composition.reduced_formula,
        "spg": spg,
        "spg_num": spg_num,
        "nat_unit": len(structure),
        "has_force_sets_here": True,
        "poscar": Poscar(structure).get_str(),
    }


@pytest.fixture
def collection(tmp_path) -> Path:
    """Six records as in phonondb's unitcells.json.xz (xz-compressed JSON list)."""
    si = Structure(Lattice.cubic(5.43), ["Si"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])
    nacl = Structure(
        Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4, FCC + [[x + 0.5, y, z] for x, y, z in FCC]
    )
    mg = Structure(
        Lattice.hexagonal(3.21, 5.21), ["Mg", "Mg"], [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]
    )
    records = [
        _record("mp-134", fcc("Al", 4.05, conventional=True), "Fm-3m", 225),
        _record("mp-30", fcc("Cu", 3.61), "Fm-3m", 225),
        _record("mp-149", si, "Fd-3m", 227),
        _record("mp-22862", nacl, "Fm-3m", 225),
        _record("mp-153", mg, "P6_3/mmc", 194),
        # never parsed unless selected: the filters judge the stated fields
        {**_record("mp-999", fcc("Au", 4.08), "Fm-3m", 225), "nat_unit": 500, "poscar": "junk"},
    ]
    path = tmp_path / "unitcells.json.xz"
    with lzma.open(path, "wt") as handle:
        json.dump(records, handle)
    return path


def _names(path: Path, **criteria) -> list[str]:
    return [name for name, _ in read_structures([path], selection=StructureFilter(**criteria))]


def _cli_names(path: Path, *options: str) -> list[str]:
    args = build_parser().parse_args(["run", str(path), *options])
    return [name for name, _ in read_structures([path], selection=structure_filter(args))]


def test_filters_select_records_before_parsing(collection, tmp_path):
    assert _names(collection, max_atoms=4) == ["mp-134", "mp-30", "mp-149", "mp-153"]
    assert _names(collection, elements=["Cu", "Na"]) == ["mp-30", "mp-22862"]
    assert _names(collection, exclude_elements=["Au", "Al", "Cl"], spacegroups=[225]) == ["mp-30"]
    assert _names(collection, spacegroups=[194, 227]) == ["mp-149", "mp-153"]
    assert _names(collection, ids=["mp-149", "mp-30", "mp-0"]) == ["mp-30", "mp-149"]
    structures = read_structures([collection], selection=StructureFilter(ids=["mp-22862"]))
    assert structures[0][1].composition.reduced_formula == "NaCl" and len(structures[0][1]) == 8
    with pytest.raises(StructureError, match="entry 5: cannot read its structure"):
        _names(collection, ids=["mp-999"])
    with pytest.raises(StructureError, match="none of the 6 structures"):
        _names(collection, elements=["Fe"])
    # the same from the command line, symbols and numbers alike, ids from a file too
    ids = tmp_path / "ids.txt"
    ids.write_text("# wanted\nmp-153, mp-149\nmp-134  # fcc\n")
    assert _cli_names(collection, "--spacegroups", "Fm-3m", "194", "--max-atoms", "4") == [
        "mp-134",
        "mp-30",
        "mp-153",
    ]
    assert _cli_names(collection, "--ids-file", str(ids), "--ids", "mp-30") == [
        "mp-134",
        "mp-30",
        "mp-149",
        "mp-153",
    ]
    assert _cli_names(collection, "--elements", "cu", "mg") == ["mp-30", "mp-153"]
    # files and folders are judged on their parsed structures, named by their stems
    folder = tmp_path / "files"
    folder.mkdir()
    fcc("Cu", 3.61).to(filename=str(folder / "copper.cif"))
    shutil.copy(collection, folder / collection.name)
    both = read_structures([folder], selection=StructureFilter(elements=["Cu"]))
    assert [name for name, _ in both] == ["copper", "mp-30"]
    assert _names(folder / "copper.cif", spacegroups=[225]) == ["copper"]


def test_sample_is_reproducible(collection):
    candidates = {"max_atoms": 10}
    first = _names(collection, sample=3, seed=7, **candidates)
    assert len(first) == 3 and first == _names(collection, sample=3, seed=7, **candidates)
    others = {tuple(_names(collection, sample=3, seed=s, **candidates)) for s in range(8)}
    assert len(others) > 1  # the seed matters
    # a larger sample with the same seed contains the smaller one, in the input order
    larger = _names(collection, sample=4, seed=7, **candidates)
    assert set(first) < set(larger)
    order = ["mp-134", "mp-30", "mp-149", "mp-22862", "mp-153"]
    assert larger == [name for name in order if name in larger]
    # --sample-seed, else --seed (the SSCHA's seed)
    assert _cli_names(collection, "--max-atoms", "10", "--sample", "3", "--seed", "7") == first
    assert _cli_names(collection, "--max-atoms", "10", "--sample", "3", "--sample-seed", "7") == (
        first
    )


def test_submit_takes_the_same_selection(collection, tmp_path, capsys):
    pytest.importorskip("fireworks")
    report = tmp_path / "submit.json"
    argv = ["submit", str(collection), *FAST, "--dry-run", "--json", str(report)]
    assert main([*argv, "--elements", "Cu", "Al", "--max-atoms", "4", "-q"]) == 0
    submitted = [name for name, _ in json.loads(report.read_text())["submitted"]]
    assert submitted == ["mp-134", "mp-30"]


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--max-atoms", "0"], "--max-atoms"),
        (["--elements", "Qq"], "--elements"),
        (["--exclude-elements", "1"], "--exclude-elements"),
        (["--spacegroups", "231"], "--spacegroups"),
        (["--spacegroups", "Xm-9"], "--spacegroups"),
        (["--ids-file", "/nonexistent/ids.txt"], "--ids-file"),
        (["--sample", "0"], "--sample"),
        (["--sample-seed", "-1"], "--sample-seed"),
    ],
)
@pytest.mark.parametrize("command", ["run", "submit"])
def test_bad_selection_is_a_one_line_usage_error(command, extra, option, capsys):
    assert main([command, str(EXAMPLES / "Al_fcc.cif"), *extra]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith(f"tdphonon {command}: error: argument {option}"), error


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "argument --workers"),
        (["--workers", "many"], "argument --workers"),
        (["--export", "out"], "--export writes the phonopy files of one crystal"),
        (["--plots", "plots"], "--plots draws one crystal"),
    ],
)
def test_bad_campaign_options(extra, message, tmp_path, capsys):
    al = str(EXAMPLES / "Al_fcc.cif")
    argv = ["run", al, al, "--model", "emt", "--store", str(tmp_path / "s")]
    assert main([*argv, *[str(tmp_path / e) if e in ("out", "plots") else e for e in extra]]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error, error


def test_phonondb_collection_sample(shared_dir, monkeypatch):
    """A sample of the 9,283 PBEsol unit cells in seconds: the records are judged on their
    stated atoms, and only the 20 taken are parsed."""
    from pymatgen.io.vasp import Poscar

    path = shared_dir / "data" / "phonondb" / "unitcells.json.xz"
    if not path.is_file():
        pytest.skip(f"phonondb unit cells not found at {path}")
    parsed = []
    from_str = Poscar.from_str

    def counting(*args, **kwargs):
        parsed.append(1)
        return from_str(*args, **kwargs)

    monkeypatch.setattr(Poscar, "from_str", counting)
    start = time.perf_counter()
    args = build_parser().parse_args(["run", str(path), "--max-atoms", "10", "--sample", "20"])
    structures = read_structures([path], selection=structure_filter(args))  # --seed 0
    elapsed = time.perf_counter() - start
    names = [name for name, _ in structures]
    assert len(names) == 20 == len(set(names)) == len(parsed)
    assert all(name.startswith("mp-") for name in names)
    assert all(len(structure) <= 10 for _, structure in structures)
    assert names == _cli_names(path, "--max-atoms", "10", "--sample", "20", "--seed", "0")
    assert elapsed < 60, elapsed  # about 1 s on an idle machine


PARENT_SCRIPT = """
import multiprocessing, sys, time

def child(parent, interval):
    from tdphonon.campaign import _exit_with_parent
    _exit_with_parent(parent, interval)
    time.sleep(120)

if __name__ == "__main__":
    import os
    context = multiprocessing.get_context("spawn")
    process = context.Process(target=child, args=(os.getpid(), 0.1))
    process.start()
    print(process.pid, flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_end_when_the_campaign_is_killed(tmp_path):
    """A worker whose campaign process was killed (SIGKILL: no cleanup ran) exits by itself."""
    import os
    import signal
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert _running(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not _running(worker):
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker outlived its campaign process by 30 s")


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited one that nobody reaped is not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
