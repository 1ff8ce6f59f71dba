"""The tdphonon command line, end to end with EMT on an embedded store."""

from __future__ import annotations

import json
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
