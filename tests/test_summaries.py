"""The summaries of the documents are derived from their fields (no hand-made lists)."""

from __future__ import annotations

import dataclasses

from tdphonon.schemas import (
    HarmonicPhononDoc,
    SSCHAIterationDoc,
    SSCHATemperatureDoc,
    ThermalConductivityDoc,
    summary_fields,
)
from tdphonon.sscha import IterationRecord

#: Keys of the per-temperature entries of ``tdphonon run --json`` that readers rely on.
RUN_KEYS = {
    "temperature",
    "statistics",
    "converged",
    "message",
    "n_force_evaluations",
    "n_iterations",
    "free_energy",
    "free_energy_error",
    "free_energy_note",
    "has_imaginary_modes",
    "harmonic_has_imaginary_modes",
    "stabilised",
    "min_frequency",
    "min_frequency_excluding_acoustic_pockets",
    "acoustic_pockets",
    "mean_frequency_shift",
    "frequencies",
    "frequency_errors",
    "frequency_shifts",
}


def test_iteration_doc_has_the_record_fields():
    record = [field.name for field in dataclasses.fields(IterationRecord)]
    fields = list(SSCHAIterationDoc.model_fields)
    assert fields[: len(record) + 1] == ["temperature", *record]
    for field in dataclasses.fields(IterationRecord):
        assert SSCHAIterationDoc.model_fields[field.name].description
        assert field.metadata["description"] == (
            SSCHAIterationDoc.model_fields[field.name].description
        )


def test_temperature_summary_keeps_scalars_and_small_json():
    keys = set(SSCHATemperatureDoc.summary_keys().values())
    assert RUN_KEYS <= keys
    for left_out in ("structure", "force_constants", "band_structure", "dos", "history"):
        assert left_out not in summary_fields(SSCHATemperatureDoc)
    assert "provenance" not in keys and "final_iteration" not in keys
    scalars = SSCHATemperatureDoc.scalar_keys()
    assert "free_energy" in scalars and "frequencies" not in scalars
    # fields missing from an older document get their default (or None)
    summary = SSCHATemperatureDoc.summarise({"temperature": 300.0})
    assert summary["temperature"] == 300.0 and summary["frequency_errors"] == {}
    assert summary["free_energy"] is None and summary["acoustic_pockets"] == []


def test_harmonic_and_conductivity_summaries():
    assert {"frequencies", "has_imaginary_modes", "n_force_evaluations"} <= set(
        HarmonicPhononDoc.summary_keys().values()
    )
    doc = {
        "formula": "Si",
        "temperatures": [300.0, 600.0],
        "kappa_harmonic": [[1.0] * 6, None],
        "kappa_renormalized": [[2.0] * 6, None],
        "harmonic_reasons": [None, "imaginary"],
        "renormalized_reasons": [None, "imaginary"],
        "ratio": [[2.0] * 6, None],
        "ratio_trace": [2.0, None],
        "n_force_evaluations": 10,
    }
    summary = ThermalConductivityDoc.summarise(doc)
    assert summary["formula"] == "Si" and "temperatures" not in summary
    first, second = summary["results"]
    assert first["temperature"] == 300.0 and first["ratio"] == 2.0
    assert first["ratio_components"] == [2.0] * 6
    assert second["reason_harmonic"] == "imaginary" and second["kappa_renormalized"] is None
