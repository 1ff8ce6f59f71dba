"""The tdphonon command line, end to end with EMT on an embedded store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import phonopy
import pytest

from tdphonon.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_help_explains_itself(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for option in ("--temperatures", "--model", "--supercell", "--no-relax", "--statistics"):
        assert option in text
    assert "TDPHONON_MODEL" in text


def test_run_json_export_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("TDPHONON_STORE_DIR", str(tmp_path / "store"))
    summary_path = tmp_path / "al.json"
    code = main(
        [
            "run", str(EXAMPLES / "Al_fcc.cif"), "--model", "emt", "-T", "300", "900",
            "--min-length", "8", "--statistics", "classical", "--tolerance", "0.1",
            "--json", str(summary_path), "--export", str(tmp_path / "phonopy"),
            "--plots", str(tmp_path / "plots"), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(summary_path.read_text())
    results = summary["results"]
    assert [r["temperature"] for r in results] == [300.0, 900.0]
    for entry in results:
        assert entry["converged"] is True
        assert entry["n_force_evaluations"] > 0
        assert entry["free_energy"] < 0 and entry["free_energy_error"] >= 0
        assert entry["has_imaginary_modes"] is False
        assert {"Gamma", "X", "L"} <= set(entry["frequencies"])
    # hotter means stiffer for EMT Al: the quartic terms dominate
    assert max(results[1]["frequencies"]["X"]) > max(results[0]["frequencies"]["X"])
    assert (tmp_path / "plots" / "Al_bands.png").stat().st_size > 10_000
    assert (tmp_path / "plots" / "Al_convergence.png").exists()

    loaded = phonopy.load(tmp_path / "phonopy" / "phonopy_900K.yaml")
    loaded.run_qpoints([[0.5, 0.0, 0.5]])  # X of the standard primitive fcc cell
    np.testing.assert_allclose(
        np.sort(loaded.qpoints.frequencies[0]), results[1]["frequencies"]["X"], atol=1e-6
    )
    assert (tmp_path / "phonopy" / "phonopy_harmonic.yaml").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("3\n\nO 0 0 0\nH 0.76 0.59 0\nH -0.76 0.59 0\n", "non-periodic"),
    ],
)
def test_bad_input_is_one_line_error(tmp_path, capsys, content, message):
    path = tmp_path / "input.xyz"
    if content is not None:
        path.write_text(content)
    assert main(["run", str(path), "--model", "emt"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("tdphonon: error:") and message in error
    assert "\n" not in error


def test_unsupported_element_is_reported(tmp_path, capsys):
    code = main(["run", str(EXAMPLES / "NaCl.cif"), "--model", "emt"])
    assert code == 2
    assert "not supported by the potential 'emt'" in capsys.readouterr().err


def test_run_prints_no_library_warnings_and_plain_formulas(tmp_path, capsys, caplog):
    """No jobflow / atomate2 warnings, 'Al' (not 'Al1'), and no f_G max for a monatomic
    crystal (its 3 modes at Gamma are acoustic)."""
    import logging
    import warnings

    from tdphonon.library_warnings import LIBRARY_WARNINGS

    caplog.set_level(logging.INFO)
    argv = [
        "run", str(EXAMPLES / "Al_fcc.cif"), "--model", "emt", "-T", "300",
        "--min-length", "7", "--tolerance", "0.2", "--no-plots", "--store", str(tmp_path / "s"),
    ]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0  # with the relaxation (atomate2) and without --quiet
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    out, err = capsys.readouterr()
    for message, category, _ in LIBRARY_WARNINGS:
        pattern = f"{category.__name__}: {message}"
        assert not any(re.search(pattern, text) for text in shown), shown
        assert not re.search(message, err)
    assert "harmonic phonons of Al:" in caplog.text and "Al1" not in caplog.text + out
    lines = out.splitlines()
    assert lines[0].startswith("tdphonon results for Al ")
    header = next(line for line in lines if "f_G max" in line)
    end = header.index("f_G max") + len("f_G max")
    rows = [line for line in lines if line.strip().startswith(("harm.", "300.0"))]
    assert len(rows) == 2
    assert all(row[end - 8 : end].strip() == "-" for row in rows), rows
    assert any("f_G max:" in line and "optical" in line for line in lines)  # the legend


def test_formulas_in_messages_are_reduced():
    from pymatgen.core import Lattice, Structure

    from tdphonon.structures import StructureError, check_structure

    nacl = Structure(Lattice.cubic(5.6), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(StructureError, match=r"^NaCl has atoms closer"):
        check_structure(nacl)


def test_forgetting_guard_table():
    from tdphonon.cli.report import format_forgetting_guard

    guard = {
        "n_structures": 4,
        "energy_change_mae_ev_per_atom": 0.01234,
        "energy_change_mae_ev_per_atom_shifted": 0.004,
        "force_change_mae_ev_per_angstrom": 0.031,
        "force_change_max_ev_per_angstrom": 0.21,
    }
    lines = format_forgetting_guard(guard).splitlines()
    assert lines[0].startswith("forgetting guard:") and "4 validation structures" in lines[0]
    assert len(lines) == 5 and "{" not in "".join(lines)
    assert lines[1].split()[-2:] == ["0.0123", "eV/atom"]
    assert lines[4].split()[-2:] == ["0.2100", "eV/Å"]
    assert "not checked" in format_forgetting_guard({"n_structures": 0})


def test_library_warning_filters_are_precise():
    """jobflow's warning is silenced; the same words from anywhere else still show."""
    import warnings

    from jobflow import Flow, job

    from tdphonon.library_warnings import ignore_library_warnings

    @job
    def constant(x):
        return x

    flow = Flow([constant(1), constant(2)])  # two jobs that do not depend on each other
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(flow.iterflow())
        assert any("not connected" in str(w.message) for w in caught)
        caught.clear()
        ignore_library_warnings()
        list(flow.iterflow())
        warnings.warn("Some jobs are not connected", UserWarning, stacklevel=1)
    assert [w.filename for w in caught] == [__file__]
