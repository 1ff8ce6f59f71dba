"""Output of the sub-commands: summaries, tables, plots and exports.

The summaries (the ``--json`` files) are built from the summaries of the documents
(:meth:`tdphonon.schemas.Document.summarise`), with the keys that earlier versions wrote;
the sub-command modules only parse the command line and call these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "IMAGINARY_MODES_RULE",
    "dft_kappa_summary",
    "export_phonopy",
    "format_evaluation",
    "format_forgetting_guard",
    "format_kappa_table",
    "format_table",
    "format_validation_table",
    "frequency_report",
    "kappa_summary",
    "nac_report",
    "summarise",
    "supercell_report",
    "write_kappa_plot",
    "write_plots",
]


# -- tdphonon run ---------------------------------------------------------------------------------


def _rule() -> str:
    from tdphonon.phonons import ACOUSTIC_POCKET_RULE, IMAGINARY_TOLERANCE

    return (
        "has_imaginary_modes and min_frequency_excluding_acoustic_pockets: "
        f"{ACOUSTIC_POCKET_RULE}; "
        f"imaginary: below {IMAGINARY_TOLERANCE} THz. min_frequency: every mode. "
        "acoustic_pockets: the imaginary acoustic modes left out (q fractional, THz)"
    )


#: How ``has_imaginary_modes`` is decided, in the JSON summary.
IMAGINARY_MODES_RULE = _rule()


def frequency_report(doc: dict[str, Any]) -> dict[str, Any]:
    """Lowest frequencies of a harmonic or SSCHA document, with and without acoustic pockets.

    Documents written before the acoustic pockets were reported have only ``min_frequency``
    (then with the pockets left out): it fills both values, and the pockets are unknown (None).
    """
    excluding = doc.get("min_frequency_excluding_acoustic_pockets")
    return {
        "min_frequency": doc["min_frequency"],
        "min_frequency_excluding_acoustic_pockets": (
            doc["min_frequency"] if excluding is None else excluding
        ),
        "acoustic_pockets": doc.get("acoustic_pockets") if excluding is not None else None,
    }


def _structure(doc: dict[str, Any]) -> Any:
    from pymatgen.core import Structure

    structure = doc["structure"]
    return Structure.from_dict(structure) if isinstance(structure, dict) else structure


def supercell_report(harmonic: dict[str, Any]) -> dict[str, Any]:
    """Size and matrix of the supercell used (of the standard primitive cell)."""
    structure = _structure(harmonic)
    return {
        "n_atoms": harmonic["n_supercell_atoms"],
        "matrix": harmonic["supercell_matrix"],
        "of": f"standard primitive cell ({len(structure)} atoms), phonopy convention",
    }


def nac_report(harmonic: dict[str, Any]) -> str:
    """Whether the bands include the non-analytical term correction (LO-TO splitting).

    Without Born charges, every crystal of more than one element gets the note: LO-TO
    splitting exists in polar crystals, and tdphonon does not tell insulators from metals.
    """
    structure = _structure(harmonic)
    if harmonic.get("nac_params") is not None:
        return "Born effective charges given (--born): LO-TO splitting included"
    if len(structure.composition.elements) < 2:
        return "not needed: one element, no LO-TO splitting"
    return (
        "none: the potential gives no Born effective charges, so no LO-TO splitting (if the "
        "crystal is polar); use --born BORN for it"
    )


def summarise(harmonic: dict[str, Any], results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """JSON summary: harmonic reference and one entry per temperature.

    The entries are the summaries of the documents (:meth:`~tdphonon.schemas.Document.summarise`
    of :class:`~tdphonon.schemas.HarmonicPhononDoc` and
    :class:`~tdphonon.schemas.SSCHATemperatureDoc`; the labelled frequencies as
    ``frequencies``, their errors as ``frequency_errors``) with the lowest frequencies of
    :func:`frequency_report` and ``max_frequency_error`` (THz, the largest of those errors).
    """
    from tdphonon.schemas import HarmonicPhononDoc, SSCHATemperatureDoc

    structure = harmonic["structure"]
    formula = structure.composition.reduced_formula if hasattr(structure, "composition") else ""
    entries = []
    for doc in results:
        entry = {**SSCHATemperatureDoc.summarise(doc), **frequency_report(doc)}
        errors = entry["frequency_errors"] or {}
        entry["frequency_errors"] = errors
        entry["max_frequency_error"] = max(
            (e for values in errors.values() for e in values), default=None
        )
        entries.append(entry)
    return {
        "formula": formula,
        "model": harmonic["provenance"].get("model", {}),
        "supercell": supercell_report(harmonic),
        "imaginary_modes_rule": IMAGINARY_MODES_RULE,
        "nac": nac_report(harmonic),
        "harmonic": {**HarmonicPhononDoc.summarise(harmonic), **frequency_report(harmonic)},
        "results": entries,
        "n_force_evaluations": harmonic["n_force_evaluations"]
        + sum(e["n_force_evaluations"] for e in entries),
    }


def format_table(summary: dict[str, Any]) -> str:
    """Plain-text summary table, one row per temperature."""
    harmonic = summary["harmonic"]
    gamma_label = next((k for k in harmonic["frequencies"] if k.upper() in ("GAMMA", "Γ")), None)

    def gamma_optical(entry: dict[str, Any]) -> str:
        """Highest frequency at Gamma, with its standard error where it has one."""
        frequencies = entry["frequencies"]
        # one atom per primitive cell: the 3 modes at Gamma are acoustic (0), no optical one
        if gamma_label is None or len(frequencies.get(gamma_label) or []) <= 3:
            return "-"
        errors = (entry.get("frequency_errors") or {}).get(gamma_label)
        text = f"{frequencies[gamma_label][-1]:.3f}"
        return f"{text}±{errors[-1]:.3f}" if errors else text

    def lowest(entry: dict[str, Any]) -> str:
        """min f (acoustic pockets left out) and the lowest acoustic pocket."""
        pockets = entry.get("acoustic_pockets")
        pocket = "?" if pockets is None else "-"
        if pockets:
            pocket = f"{min(p['frequency'] for p in pockets):.3f}"
        excluding = entry.get("min_frequency_excluding_acoustic_pockets", entry["min_frequency"])
        return f"{excluding:8.3f} {pocket:>8}"

    def sigma_max(entry: dict[str, Any]) -> str:
        value = entry.get("max_frequency_error")
        return "-" if value is None else f"{value:.3f}"

    header = (
        f"{'T (K)':>8} {'conv':>5} {'min f':>8} {'pocket':>8} {'f_G max':>12} {'<shift>':>8} "
        f"{'σ max':>6} {'stabil.':>7} {'F (eV/atom)':>20} {'evals':>7}"
    )
    lines = [f"tdphonon results for {summary['formula']}  (frequencies in THz)"]
    if summary.get("supercell"):
        cell = summary["supercell"]
        lines.append(
            f"supercell: {cell['n_atoms']} atoms, matrix {cell['matrix']} of the {cell['of']}"
        )
    lines += [
        header,
        "-" * len(header),
        f"{'harm.':>8} {'':>5} {lowest(harmonic)} "
        f"{gamma_optical(harmonic):>12} {'':>8} {'':>6} {'':>7} {'':>20} "
        f"{harmonic['n_force_evaluations']:7d}",
    ]
    for entry in summary["results"]:
        if entry["free_energy"] is None:
            free_energy = "undefined"
        else:
            free_energy = f"{entry['free_energy']:.5f}±{entry['free_energy_error']:.5f}"
        lines.append(
            f"{entry['temperature']:8.1f} {'yes' if entry['converged'] else 'NO':>5} "
            f"{lowest(entry)} {gamma_optical(entry):>12} "
            f"{entry['mean_frequency_shift']:+8.3f} {sigma_max(entry):>6} "
            f"{'yes' if entry['stabilised'] else '-':>7} "
            f"{free_energy:>20} {entry['n_force_evaluations']:7d}"
        )
    not_converged = [e for e in summary["results"] if not e["converged"]]
    for entry in not_converged:
        lines.append(f"WARNING: {entry['temperature']:g} K: {entry['message']}")
    lines.append(
        "f_G max: highest optical frequency at Gamma ('-': one atom per primitive cell, "
        "no optical mode); ±: its bootstrap standard error; σ max: the largest standard error "
        "of a frequency at a labelled point (--tolerance bounds each; all in --json as "
        "frequency_errors)"
    )
    lines.append(
        "min f: lowest frequency on the band path and a q-mesh, the acoustic branches near "
        "Gamma (inside the first shell of commensurate q-points, where only interpolation "
        "determines them) left out; imaginary modes (has_imaginary_modes) are judged on it. "
        "pocket: the lowest of those acoustic modes when imaginary ('-': none)"
    )
    nac = summary.get("nac", "")
    if nac.startswith("none"):
        lines.append(f"NAC: {nac}")
    lines.append(f"total force evaluations: {summary['n_force_evaluations']}")
    return "\n".join(lines)


def write_plots(
    harmonic: dict[str, Any], results: Sequence[dict[str, Any]], directory: Path, tolerance: float
) -> list[Path]:
    """Band structures at all temperatures overlaid, and SSCHA convergence."""
    from tdphonon.plotting import plot_band_structures, plot_convergence

    directory.mkdir(parents=True, exist_ok=True)
    formula = harmonic["structure"].composition.reduced_formula
    bands = {"harmonic": harmonic["band_structure"]}
    bands.update({f"{doc['temperature']:g} K": doc["band_structure"] for doc in results})
    histories = {f"{doc['temperature']:g} K": doc["history"] for doc in results}
    note = None
    if nac_report(harmonic).startswith("none"):
        note = "No LO-TO splitting: the potential gives no Born effective charges (--born BORN)"
    errors = {
        f"{doc['temperature']:g} K": (doc["labelled_frequencies"], doc["labelled_frequency_errors"])
        for doc in results
        if doc.get("labelled_frequency_errors")
    }
    return [
        plot_band_structures(
            bands, directory / f"{formula}_bands.png", title=formula, note=note, errors=errors
        ),
        plot_convergence(histories, directory / f"{formula}_convergence.png", tolerance),
    ]


def export_phonopy(
    harmonic: dict[str, Any], results: Sequence[dict[str, Any]], directory: Path
) -> list[Path]:
    """phonopy_harmonic.yaml and phonopy_<T>K.yaml with force constants."""
    from tdphonon.schemas import as_array
    from tdphonon.structures import make_phonopy

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    targets = [("harmonic", harmonic)] + [(f"{doc['temperature']:g}K", doc) for doc in results]
    for tag, doc in targets:
        # the harmonic document's Born charges (per site of the same standard primitive cell)
        phonon = make_phonopy(
            doc["structure"], doc["supercell_matrix"], nac_params=harmonic.get("nac_params")
        )
        phonon.force_constants = as_array(doc["force_constants"])
        path = directory / f"phonopy_{tag}.yaml"
        phonon.save(path, settings={"force_constants": True})
        paths.append(path)
    return paths


# -- tdphonon kappa -------------------------------------------------------------------------------


def kappa_summary(doc: dict[str, Any]) -> dict[str, Any]:
    """JSON summary of a :class:`~tdphonon.schemas.ThermalConductivityDoc`.

    Its summary (:meth:`~tdphonon.schemas.Document.summarise`: one entry per temperature in
    ``results``, with ``kappa_harmonic``, ``kappa_renormalized``, ``reason_harmonic``,
    ``reason_renormalized`` and ``ratio`` of the traces), with the source and the mesh,
    method and isotope of its settings.
    """
    from tdphonon.schemas import ThermalConductivityDoc

    summary = ThermalConductivityDoc.summarise(doc)
    settings = doc["settings"]
    return {
        "formula": summary.pop("formula"),
        "source": "potential",
        "mesh": settings.get("mesh"),
        "method": settings.get("method"),
        "isotope": settings.get("isotope"),
        **summary,
    }


def _average(kappa: Sequence[float] | None) -> str:
    if kappa is None:
        return "n/a"
    value = sum(kappa[:3]) / 3
    return f"{value:.3f}" if math.isfinite(value) else "n/a"


def format_kappa_table(summary: dict[str, Any]) -> str:
    """Plain-text table: kappa (average of xx, yy, zz) per temperature, both fc2."""
    header = f"{'T (K)':>8} {'kappa harm.':>12} {'kappa renorm.':>14} {'ratio':>7}"
    lines = [
        f"lattice thermal conductivity of {summary['formula']} (W/m-K, (xx+yy+zz)/3; "
        f"{summary['method']} on a {'x'.join(map(str, summary['mesh']))} mesh)",
        header,
        "-" * len(header),
    ]
    notes = []
    for entry in summary["results"]:
        ratio = entry["ratio"]
        lines.append(
            f"{entry['temperature']:8.1f} {_average(entry['kappa_harmonic']):>12} "
            f"{_average(entry['kappa_renormalized']):>14} "
            f"{'n/a' if ratio is None else f'{ratio:.3f}':>7}"
        )
        for kind in ("harmonic", "renormalized"):
            reason = entry[f"reason_{kind}"]
            if reason and not reason.startswith("not computed: DFT"):
                notes.append(f"{entry['temperature']:g} K, {kind}: {reason}")
    lines.extend(f"NOTE: {note}" for note in notes)
    if "n_force_evaluations" in summary:
        lines.append(
            f"fc3: {summary['n_fc3_supercells']} supercells ({summary['fc3_method']}); "
            f"total force evaluations: {summary['n_force_evaluations']}"
        )
    return "\n".join(lines)


def write_kappa_plot(summary: dict[str, Any], directory: Path) -> Path:
    """kappa versus temperature, harmonic and renormalised (or DFT) curves."""
    from tdphonon.plotting import plot_kappa_temperature

    directory.mkdir(parents=True, exist_ok=True)
    temperatures = [entry["temperature"] for entry in summary["results"]]
    harmonic_label = "harmonic fc2" if summary["source"] == "potential" else "DFT (harmonic fc2)"
    curves = {harmonic_label: [entry["kappa_harmonic"] for entry in summary["results"]]}
    if summary["source"] == "potential":
        curves["SSCHA fc2 at T"] = [entry["kappa_renormalized"] for entry in summary["results"]]
    return plot_kappa_temperature(
        temperatures,
        curves,
        directory / f"{summary['formula']}_kappa.png",
        title=f"{summary['formula']}: lattice thermal conductivity",
    )


def dft_kappa_summary(
    result: Any, settings: Any, source: str, forces: str | None
) -> dict[str, Any]:
    """JSON summary of kappa from DFT force sets.

    ``result`` is the :class:`~tdphonon.conductivity.DFTKappa` of
    :func:`~tdphonon.conductivity.dft_kappa` run with ``settings``
    (:class:`~tdphonon.conductivity.ConductivitySettings`); ``source`` and ``forces`` are the
    files read. The keys of :func:`kappa_summary` where they apply: the renormalised kappa
    is not computed (DFT force sets give the harmonic fc2 only).
    """
    reason = "not computed: DFT force sets give the harmonic fc2 only"
    kappas = result.result.kappa_lists()
    return {
        "formula": result.formula,
        "source": source,
        "forces": forces,
        "mesh": list(settings.mesh),
        "method": settings.method,
        "isotope": settings.isotope,
        "nac": result.nac,
        "fc3_supercell_matrix": result.supercell_matrix,
        "fc2_supercell_matrix": result.phonon_supercell_matrix,
        "n_fc3_supercells": result.n_fc3_supercells,
        "results": [
            {
                "temperature": float(t),
                "kappa_harmonic": kappa,
                "kappa_renormalized": None,
                "reason_harmonic": why,
                "reason_renormalized": reason,
                "ratio": None,
            }
            for t, kappa, why in zip(
                result.result.temperatures, kappas, result.result.reasons, strict=True
            )
        ],
    }


# -- tdphonon evaluate and finetune ----------------------------------------------------------------


def format_evaluation(result: Any) -> str:
    """Table of :func:`tdphonon.evaluation.evaluate`: errors per compound and overall."""
    lines = [
        f"{'compound':30s} {'freq MAE (THz)':>15s} {'mean error':>11s} {'best scale':>11s} "
        f"{'force MAE (eV/Å)':>17s} {'supercells':>10s}"
    ]
    for c in result.compounds:
        lines.append(
            f"{c.name:30s} {c.frequency_mae_thz:15.3f} {c.frequency_mean_error_thz:11.3f} "
            f"{c.frequency_scale:11.3f} {c.force_mae_ev_per_angstrom:17.4f} {c.n_supercells:10d}"
        )
    lines.append(
        f"{'overall (mean)':30s} {result.frequency_mae_thz:15.3f} "
        f"{result.frequency_mean_error_thz:11.3f} {'':11s} "
        f"{result.force_mae_ev_per_angstrom:17.4f} {result.n_force_evaluations:10d} evaluations"
    )
    lines.append(
        "mean error < 0: the potential is too soft; best scale: the factor on its frequencies "
        "that minimises their MAE"
    )
    return "\n".join(lines)


def format_validation_table(before: Any, after: Any) -> str:
    """Frequency MAE per validation compound before and after fine-tuning (THz)."""
    lines = [f"{'validation compound':30s} {'before (THz)':>13s} {'after (THz)':>12s}"]
    for b, a in zip(before.compounds, after.compounds, strict=True):
        lines.append(f"{b.name:30s} {b.frequency_mae_thz:13.3f} {a.frequency_mae_thz:12.3f}")
    lines.append(
        f"{'mean':30s} {before.frequency_mae_thz:13.3f} "
        f"{after.frequency_mae_thz:12.3f}  (ratio "
        f"{before.frequency_mae_thz / after.frequency_mae_thz:.2f})"
    )
    return "\n".join(lines)


#: Rows of the forgetting-guard table: key of :func:`tdphonon.finetune.forgetting_guard`,
#: label, unit.
FORGETTING_ROWS = (
    ("energy_change_mae_ev_per_atom", "mean |dE| per atom", "eV/atom"),
    ("energy_change_mae_ev_per_atom_shifted", "mean |dE| per atom, mean shift removed", "eV/atom"),
    ("force_change_mae_ev_per_angstrom", "mean |dF| per component", "eV/Å"),
    ("force_change_max_ev_per_angstrom", "max |dF| per component", "eV/Å"),
)


def format_forgetting_guard(forgetting: dict[str, Any]) -> str:
    """The forgetting guard as a small table (change from the pretrained potential).

    Parameters
    ----------
    forgetting : dict
        From :func:`tdphonon.finetune.forgetting_guard`: ``n_structures`` and the changes
        of energies and forces between the pretrained and the fine-tuned potential on
        structures not trained on.

    Returns
    -------
    str
        A title line and one line per quantity (unknown keys are listed as they are).
    """
    n = int(forgetting.get("n_structures") or 0)
    if n == 0:
        return "forgetting guard: not checked (no validation structures)"
    lines = [
        f"forgetting guard: change from the pretrained potential on {n} validation "
        f"structure{'s' if n != 1 else ''} (not trained on)"
    ]
    known = {"n_structures"}
    for key, label, unit in FORGETTING_ROWS:
        if forgetting.get(key) is not None:
            lines.append(f"  {label:40s} {forgetting[key]:10.4f} {unit}")
            known.add(key)
    for key, value in forgetting.items():
        if key not in known:
            lines.append(f"  {key:40s} {value!s:>10}")
    return "\n".join(lines)
