"""Every bad option of every sub-command: one line on stderr, exit code 2, no work done.

The options are checked when the command line is parsed (``tdphonon.cli.options``), so
nothing expensive starts: the functions that read structures, load models, open stores or
read force sets are replaced by ones that fail the test if called.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from tdphonon.cli import main
from tdphonon.cli.options import connection_kwargs, supercell_matrix

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
AL = str(EXAMPLES / "Al_fcc.cif")
MISSING_DIR = "/nonexistent/dir/x.json"

#: Bad values of the options ``run``, ``kappa`` and ``submit`` share, and the option named.
SSCHA_CASES = [
    (["-T", "nan"], "-T/--temperatures"),
    (["-T", "inf"], "-T/--temperatures"),
    (["-T", "300", "-5"], "-T/--temperatures"),
    (["-T", "hot"], "-T/--temperatures"),
    (["--supercell", "-2", "2", "2"], "--supercell"),
    (["--supercell", "1", "2"], "--supercell"),
    (["--supercell", "0", "0", "1", "0", "1", "0", "1", "0", "0"], "--supercell"),  # det -1
    (["--supercell", "2", "2", "x"], "--supercell"),
    (["--min-length", "0"], "--min-length"),
    (["--tolerance", "-1"], "--tolerance"),
    (["--tolerance", "0"], "--tolerance"),
    (["--tolerance", "nan"], "--tolerance"),
    (["--max-snapshots", "0"], "--max-snapshots"),
    (["--max-evaluations", "0"], "--max-evaluations"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-1"], "--seed"),
    (["--statistics", "boltzmann"], "--statistics"),
    (["--device", "gpu"], "--device"),
    (["--device", "tpu"], "--device"),
    (["--json", MISSING_DIR], "--json"),
]

KAPPA_CASES = [
    (["--mesh", "0", "1", "1"], "--mesh"),
    (["--mesh", "11", "11"], "--mesh"),
    (["--fc3-snapshots", "0"], "--fc3-snapshots"),
    (["--fc3-snapshots", "many"], "--fc3-snapshots"),
    (["--fc3-supercell", "2", "0", "2"], "--fc3-supercell"),
    (["--fc3-min-length", "-1"], "--fc3-min-length"),
    (["--fc3-method", "magic"], "--fc3-method"),
]

CASES = (
    [pytest.param("run", AL, *case, id=f"run {' '.join(case[0])}") for case in SSCHA_CASES]
    + [pytest.param("run", AL, *case, id=f"run {' '.join(case[0])}") for case in KAPPA_CASES]
    + [pytest.param("kappa", AL, *case, id=f"kappa {' '.join(case[0])}") for case in SSCHA_CASES]
    + [pytest.param("kappa", AL, *case, id=f"kappa {' '.join(case[0])}") for case in KAPPA_CASES]
    + [pytest.param("submit", AL, *case, id=f"submit {' '.join(case[0])}") for case in SSCHA_CASES]
    + [
        # kappa: temperatures above 0 K, DFT-mode files that exist
        pytest.param("kappa", AL, ["-T", "0"], "-T/--temperatures", id="kappa -T 0"),
        pytest.param("kappa", None, ["--phono3py", "missing.yaml"], "--phono3py", id="phono3py"),
        pytest.param("kappa", None, ["--forces", "FORCES_NONE"], "--forces", id="forces"),
        pytest.param("kappa", None, ["--fc2-forces", "NONE"], "--fc2-forces", id="fc2-forces"),
        pytest.param("run", AL, ["--plots", AL], "--plots", id="run --plots FILE"),
        pytest.param("run", AL, ["--export", AL], "--export", id="run --export FILE"),
        pytest.param("run", AL, ["--json", str(EXAMPLES)], "--json", id="run --json DIR"),
        # submit
        pytest.param("submit", AL, ["--submit-batch", "0"], "--submit-batch", id="submit-batch"),
        pytest.param("submit", AL, ["--retries", "0"], "--retries", id="submit --retries 0"),
        pytest.param("submit", AL, ["--timeout", "0"], "--timeout", id="submit --timeout 0"),
        pytest.param("submit", AL, ["--timeout", "inf"], "--timeout", id="submit --timeout inf"),
        pytest.param("submit", AL, ["--launchpad", "lp.yaml"], "--launchpad", id="launchpad"),
        pytest.param("submit", AL, ["--finetune-data", "none/"], "--finetune-data", id="data"),
        pytest.param("submit", AL, ["--routing", "x"], "--routing", id="submit --routing"),
        # query
        pytest.param("query", None, ["--retries", "0"], "--retries", id="query --retries 0"),
        pytest.param("query", None, ["--timeout", "-1"], "--timeout", id="query --timeout -1"),
        pytest.param("query", None, ["--csv", MISSING_DIR], "--csv", id="query --csv"),
        pytest.param("query", None, ["--json", MISSING_DIR], "--json", id="query --json"),
        pytest.param("query", None, ["--launchpad", "lp.yaml"], "--launchpad", id="query lp"),
        pytest.param("query", None, ["--status", "done"], "--status", id="query --status"),
        pytest.param("query", None, ["--store", AL], "--store", id="query --store CIF"),
    ]
)

FINETUNE = ["finetune", AL, "--base", "emt", "--out", "/tmp/tdphonon-never-written"]
EVALUATE = ["evaluate", AL, "--model", "emt"]
TRAINING_CASES = [
    (FINETUNE, ["--epochs", "0"], "--epochs"),
    (FINETUNE, ["--lr", "0"], "--lr"),
    (FINETUNE, ["--lr", "nan"], "--lr"),
    (FINETUNE, ["--batch-size", "0"], "--batch-size"),
    (FINETUNE, ["--patience", "0"], "--patience"),
    (FINETUNE, ["--seed", "-3"], "--seed"),
    (FINETUNE, ["--validation-fraction", "1"], "--validation-fraction"),
    (FINETUNE, ["--validation-fraction", "-0.1"], "--validation-fraction"),
    (FINETUNE, ["--energy-weight", "-1"], "--energy-weight"),
    (FINETUNE, ["--force-weight", "inf"], "--force-weight"),
    (FINETUNE, ["--stress-weight", "-0.5"], "--stress-weight"),
    (FINETUNE, ["--trainable", "everything"], "--trainable"),
    (FINETUNE, ["--device", "gpu"], "--device"),
    (FINETUNE, ["--json", MISSING_DIR], "--json"),
    (FINETUNE, ["--checkpoint-dir", AL], "--checkpoint-dir"),
    (["finetune", AL, "--base", "emt", "--out", AL], [], "--out"),
    (["finetune", "no-such-data", "--base", "emt", "--out", "/tmp/x"], [], "data"),
    (["finetune", AL, "--out", "/tmp/x"], [], "--base"),
    (EVALUATE, ["--device", "gpu"], "--device"),
    (EVALUATE, ["--json", MISSING_DIR], "--json"),
    (["evaluate", "no-such-data", "--model", "emt"], [], "data"),
]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts any work (structure, store, model, data)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("expensive work started before the options were checked")

    for target in (
        "tdphonon.structures.read_structure",
        "tdphonon.stores.get_store",
        "tdphonon.stores.run_flow",
        "tdphonon.stores.connect_store",
        "tdphonon.stores.connect_launchpad",
        "tdphonon.forcesets.read_force_sets",
        "tdphonon.potentials.get_calculator",
        "tdphonon.flows.sscha.SSCHAMaker.make",
    ):
        monkeypatch.setattr(target, forbidden)


def _one_line_error(capsys, prefix: str, option: str) -> str:
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert "Traceback" not in captured.err
    assert len(error.splitlines()) == 1, error
    assert error.startswith(f"{prefix}: error:"), error
    assert option in error, error
    return error


@pytest.mark.parametrize(("command", "structure", "extra", "option"), CASES)
def test_bad_option_is_a_one_line_usage_error(
    command, structure, extra, option, capsys, tmp_path, monkeypatch, no_work
):
    monkeypatch.chdir(tmp_path)  # relative names (lp.yaml, missing.yaml) do not exist here
    argv = [command, *([structure] if structure else []), *extra]
    assert main(argv) == 2
    _one_line_error(capsys, f"tdphonon {command}", f"argument {option}")


@pytest.mark.parametrize(("base", "extra", "option"), TRAINING_CASES)
def test_bad_training_option_is_a_one_line_usage_error(base, extra, option, capsys, no_work):
    assert main([*base, *extra]) == 2
    _one_line_error(capsys, f"tdphonon {base[0]}", option)


def test_error_names_the_allowed_values(capsys, no_work):
    assert main(["run", AL, "--device", "gpu"]) == 2
    error = _one_line_error(capsys, "tdphonon run", "--device")
    assert "auto, cpu, cuda or cuda:N" in error and "use cuda" in error
    assert main(["run", AL, "--supercell", "1", "2"]) == 2
    assert "3 integers (diagonal) or 9" in _one_line_error(capsys, "tdphonon run", "--supercell")
    assert main(["run", AL, "--json", MISSING_DIR]) == 2
    assert "does not exist: /nonexistent/dir" in _one_line_error(capsys, "tdphonon run", "--json")
    assert main(["kappa", AL, "-T", "0"]) == 2
    assert "> 0 K" in _one_line_error(capsys, "tdphonon kappa", "--temperatures")


@pytest.mark.parametrize("command", ["run", "kappa", "submit"])
def test_cuda_without_a_gpu(command, capsys, monkeypatch, no_work):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        assert main([command, AL, "--device", device]) == 2
        error = _one_line_error(capsys, f"tdphonon {command}", "argument --device")
        assert "no CUDA GPU" in error and "use cpu or auto" in error


def test_cuda_devices_that_exist_are_accepted(monkeypatch):
    from tdphonon.cli import build_parser

    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    parser = build_parser()
    assert parser.parse_args(["run", AL, "--device", "cuda:1"]).device == "cuda:1"
    assert parser.parse_args(["run", AL, "--device", "CUDA"]).device == "cuda"
    assert main(["run", AL, "--device", "cuda:2"]) == 2


def test_good_options_are_converted():
    from tdphonon.cli import build_parser

    parser = build_parser()
    argv = ["run", AL, "-T", "0", "300.5", "--supercell", "2", "2", "2", "--device", "CPU"]
    argv += ["--json", "out.json", "--fc3-snapshots", "12", "--mesh", "4", "4", "4"]
    args = parser.parse_args(argv)
    assert args.temperatures == [0.0, 300.5] and args.device == "cpu"
    assert supercell_matrix(args.supercell) == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
    assert args.json == Path("out.json") and args.fc3_snapshots == 12 and args.mesh == [4, 4, 4]
    fcc = ["-1", "1", "1", "1", "-1", "1", "1", "1", "-1"]
    args = parser.parse_args(["kappa", AL, "--supercell", *fcc])
    assert supercell_matrix(args.supercell) == [[-1, 1, 1], [1, -1, 1], [1, 1, -1]]  # fcc, det 4
    assert args.fc3_snapshots == "auto" and args.plots == Path(".")
    args = parser.parse_args(["submit", AL])
    assert (args.retries, args.timeout, args.device, args.max_snapshots) == (3, 5.0, "auto", 1024)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", AL, "--statistics", "classical", "-T", "0", "300"], "--statistics classical"),
        (["run", AL, "--kappa", "-T", "0"], "--kappa"),
        (["submit", AL, "--kappa", "-T", "0", "--dry-run"], "--kappa"),
        (["submit", AL, "--statistics", "classical", "-T", "0"], "--statistics classical"),
    ],
)
def test_options_checked_together_before_any_work(argv, message, capsys, no_work):
    assert main(argv) == 2
    assert "above 0 K" in _one_line_error(capsys, "tdphonon", message)


STORE_FILES = {
    "malformed.yaml": "docs_store: {type: MongoStore\n  oops: [\n",
    "malformed.json": '{"docs_store": ',
    "no_docs.yaml": "JOB_STORE:\n  something: else\n",
    "no_data.yaml": "docs_store: {type: MemoryStore, collection_name: o}\n",
    "no_type.yaml": "docs_store: {collection_name: o}\nadditional_stores:\n"
    "  data: {type: MemoryStore, collection_name: b}\n",
    "unknown_type.yaml": "docs_store: {type: PostgresStore}\nadditional_stores:\n"
    "  data: {type: MemoryStore, collection_name: b}\n",
    "bad_keyword.yaml": "docs_store: {type: MemoryStore, collection_name: o, colour: red}\n"
    "additional_stores:\n  data: {type: MemoryStore, collection_name: b}\n",
}


@pytest.mark.parametrize("command", ["run", "kappa", "query", "submit"])
@pytest.mark.parametrize("name", [*STORE_FILES, "missing.yaml"])
def test_bad_store_file(command, name, tmp_path, capsys, no_work):
    path = tmp_path / name
    if name in STORE_FILES:
        path.write_text(STORE_FILES[name])
    argv = [command, *([] if command == "query" else [AL]), "--store", str(path)]
    assert main(argv) == 2
    error = _one_line_error(capsys, f"tdphonon {command}", "argument --store")
    assert name in error


def test_store_errors_in_the_library(tmp_path):
    from tdphonon.stores import StoreConfigError, check_store_spec, get_store, store_from_file

    good = tmp_path / "jobflow.yaml"
    good.write_text(
        "JOB_STORE:\n  docs_store: {type: MemoryStore, collection_name: o}\n"
        "  additional_stores:\n    data: {type: MemoryStore, collection_name: b}\n"
    )
    assert "data" in store_from_file(good).additional_stores
    check_store_spec(tmp_path / "new-store-folder")  # an embedded store to create: fine
    for name, text in STORE_FILES.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(StoreConfigError, match=name.replace(".", r"\.")):
            store_from_file(tmp_path / name)
        with pytest.raises(ValueError):  # StoreConfigError is a ValueError
            get_store(tmp_path / name)
    with pytest.raises(StoreConfigError, match="neither a directory"):
        get_store(AL)
    with pytest.raises(FileNotFoundError):
        store_from_file(tmp_path / "missing.yaml")


def test_connection_budget_adds_up_to_the_timeout():
    for retries in (1, 2, 3, 5):
        for timeout in (0.5, 5.0, 60.0):
            kwargs = connection_kwargs(argparse.Namespace(retries=retries, timeout=timeout))
            pauses = kwargs["delay"] * (2 ** (retries - 1) - 1)
            total = retries * kwargs["timeout_ms"] / 1000 + pauses
            assert kwargs["retries"] == retries
            assert timeout * 0.95 <= total <= timeout + 1e-9


def test_unreachable_launchpad_fails_within_the_timeout(tmp_path, capsys, monkeypatch):
    """A closed port: the error comes after about --timeout s (default 5), not minutes."""
    from fireworks import LaunchPad

    launchpad = tmp_path / "my_launchpad.yaml"
    launchpad.write_text("host: 127.0.0.1\nport: 1\nname: fireworks\n")
    for extra, limit in (
        ([], 5.0),
        (["--timeout", "1.5"], 1.5),
        (["--retries", "1", "--timeout", "1"], 1.0),
    ):
        start = time.perf_counter()
        assert main(["submit", AL, "--launchpad", str(launchpad), "-q", *extra]) == 2
        elapsed = time.perf_counter() - start
        assert elapsed < limit + 2.5, (extra, elapsed)
        _one_line_error(capsys, "tdphonon", "mongodb://127.0.0.1:1/fireworks")
    # no --launchpad: the FireWorks configuration's launchpad gets the same timeout
    monkeypatch.setattr(
        LaunchPad, "auto_load", classmethod(lambda cls: LaunchPad(host="127.0.0.1", port=1))
    )
    start = time.perf_counter()
    assert main(["submit", AL, "-q", "--timeout", "1", "--retries", "2"]) == 2
    assert time.perf_counter() - start < 1 + 2.5
    _one_line_error(capsys, "tdphonon", "after 2 attempt(s)")


def test_unreachable_store_fails_within_the_timeout(tmp_path, capsys):
    store = tmp_path / "jobflow.yaml"
    store.write_text(
        "docs_store: {type: MongoStore, database: t, collection_name: o, host: 127.0.0.1, "
        "port: 1}\nadditional_stores:\n  data: {type: GridFSStore, database: t, "
        "collection_name: b, host: 127.0.0.1, port: 1}\n"
    )
    for argv in (["query", "-q"], ["submit", AL, "--dry-run", "-q"]):
        start = time.perf_counter()
        assert main([*argv, "--store", str(store), "--timeout", "2"]) == 2
        assert time.perf_counter() - start < 2 + 2.5
        _one_line_error(capsys, "tdphonon", "mongodb://127.0.0.1:1/t")
