"""jobflow jobs of the thermal-conductivity workflow.

* :func:`fc3_job`: third-order force constants from the potential
  (:func:`tdphonon.conductivity.compute_fc3`) -> :class:`~tdphonon.schemas.ThirdOrderForceConstantsDoc`.
* :func:`kappa_job`: phono3py kappa for one fc2 (harmonic, or SSCHA at a temperature) with
  the shared fc3 -> :class:`~tdphonon.schemas.KappaDoc` (mode-resolved arrays in the data
  store).
* :func:`collect_kappa_job`: the harmonic and renormalised kappa side by side, their ratio
  and the force-evaluation counts -> :class:`~tdphonon.schemas.ThermalConductivityDoc`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from jobflow import JobConfig, job
from jobflow.core.reference import OnMissing
from pymatgen.core import Structure

from tdphonon import __version__
from tdphonon.conductivity import (
    FC3_DISTANCE,
    FC3_MIN_LENGTH,
    MODE_DATA_FIELDS,
    ConductivitySettings,
    ThermalConductivity,
    compute_fc3,
)
from tdphonon.potentials import PotentialSpec
from tdphonon.schemas import KappaDoc, ThermalConductivityDoc, ThirdOrderForceConstantsDoc

__all__ = ["collect_kappa_job", "fc3_job", "kappa_job"]

#: Output keys that go to the JobStore's additional "data" store.
FC3_DATA = ["fc3", "fc2"]
KAPPA_DATA = list(MODE_DATA_FIELDS)


def _structure(structure: Any) -> Structure:
    return Structure.from_dict(structure) if isinstance(structure, dict) else structure


@job(data=FC3_DATA)
def fc3_job(
    structure: Structure,
    potential: PotentialSpec | None = None,
    supercell_matrix: list | None = None,
    min_length: float = FC3_MIN_LENGTH,
    method: str = "random",
    number_of_snapshots: int | str = "auto",
    distance: float = FC3_DISTANCE,
    seed: int = 0,
    plusminus: bool = True,
) -> ThirdOrderForceConstantsDoc:
    """Third-order force constants of ``structure`` with the potential.

    Parameters
    ----------
    structure : Structure
        Unit cell (the standard primitive cell of the SSCHA workflow).
    potential : PotentialSpec, optional
        The potential (:meth:`PotentialSpec.calculator`); default:
        :func:`~tdphonon.potentials.default_model`.
    supercell_matrix : list, optional
        fc3 supercell (phonopy convention); default from ``min_length``.
    min_length : float
        Minimum image distance of the default fc3 supercell, Å.
    method : {"random", "finite"}
        Random displacements + symfc, or finite differences.
    number_of_snapshots : int or "auto"
        Random supercells.
    distance : float
        Displacement, Å.
    seed : int
        Random seed.
    plusminus : bool
        Random displacements in +/- pairs.
    """
    structure = _structure(structure)
    calculator = (potential or PotentialSpec()).calculator()
    result = compute_fc3(
        structure,
        calculator,
        supercell_matrix=supercell_matrix,
        min_length=min_length,
        method=method,
        number_of_snapshots=number_of_snapshots,
        distance=distance,
        random_seed=seed,
        plusminus=plusminus,
    )
    return ThirdOrderForceConstantsDoc(
        structure=structure,
        supercell_matrix=result.supercell_matrix.tolist(),
        n_supercell_atoms=result.fc3.shape[1],
        fc3=result.fc3,
        fc2=result.fc2,
        method=result.method,
        distance=result.distance,
        random_seed=result.random_seed,
        n_supercells=result.n_supercells,
        n_force_evaluations=result.n_force_evaluations,
        wall_time=result.wall_time,
        provenance={"model": calculator.provenance(), "tdphonon_version": __version__},
    )


@job(data=KAPPA_DATA)
def kappa_job(
    structure: Structure,
    fc3: Any,
    fc3_supercell_matrix: list,
    fc2: Any,
    fc2_supercell_matrix: list | None,
    temperatures: list[float],
    label: str = "harmonic",
    settings: dict[str, Any] | None = None,
    born_charges: list | None = None,
    dielectric: list | None = None,
) -> KappaDoc:
    """phono3py thermal conductivity of one fc2 with the fc3 of :func:`fc3_job`.

    Parameters
    ----------
    structure : Structure
        Unit cell of both force constants.
    fc3 : array
        Compact fc3 on ``fc3_supercell_matrix``, eV/Å³.
    fc3_supercell_matrix : list
        fc3 supercell (phonopy convention).
    fc2 : array
        fc2 on ``fc2_supercell_matrix`` (full or compact), eV/Å².
    fc2_supercell_matrix : list, optional
        fc2 supercell; None: the fc3 supercell.
    temperatures : list of float
        K.
    label : str
        'harmonic' or the SSCHA temperature.
    settings : dict, optional
        :class:`~tdphonon.conductivity.ConductivitySettings` keyword arguments.
    born_charges, dielectric : list, optional
        NAC parameters (both or none).
    """
    settings_obj = ConductivitySettings(**(settings or {}))
    conductivity = ThermalConductivity.from_force_constants(
        _structure(structure),
        np.asarray(fc3, dtype=float),
        fc3_supercell_matrix,
        fc2_supercell_matrix,
        settings=settings_obj,
        born_charges=born_charges,
        dielectric=dielectric,
    )
    result = conductivity.run(np.asarray(fc2, dtype=float), temperatures)
    return KappaDoc(
        label=label,
        temperatures=result.temperatures.tolist(),
        kappa=result.kappa_lists(),
        reasons=result.reasons,
        min_frequency=result.min_frequency,
        fc2_supercell_matrix=conductivity.fc2_supercell_matrix.tolist(),
        fc3_supercell_matrix=np.asarray(fc3_supercell_matrix, dtype=int).tolist(),
        settings=_settings_dict(settings_obj),
        wall_time=result.wall_time,
        **result.mode_data(),
    )


def _settings_dict(settings: ConductivitySettings) -> dict[str, Any]:
    from dataclasses import asdict

    values = asdict(settings)
    values["mesh"] = list(values["mesh"])
    return values


def _ratio(
    renormalized: list[float] | None, harmonic: list[float] | None
) -> tuple[list[float | None] | None, float | None]:
    if renormalized is None or harmonic is None:
        return None, None
    harmonic_array = np.asarray(harmonic, dtype=float)
    renormalized_array = np.asarray(renormalized, dtype=float)
    scale = np.abs(harmonic_array[:3]).max()
    ratio = [
        float(r / h) if abs(h) > 1e-6 * scale else None
        for r, h in zip(renormalized_array, harmonic_array, strict=True)
    ]
    trace = harmonic_array[:3].sum()
    return ratio, float(renormalized_array[:3].sum() / trace) if abs(trace) > 0 else None


@job(config=JobConfig(on_missing_references=OnMissing.NONE))
def collect_kappa_job(
    fc3: dict[str, Any],
    harmonic_kappa: dict[str, Any],
    renormalized_kappa: list[dict[str, Any] | None] | None,
    temperatures: list[float],
    kappa_uuids: dict[str, str],
    n_harmonic_force_evaluations: int | None = None,
    n_sscha_force_evaluations: list[int | None] | None = None,
    fc3_settings: dict[str, Any] | None = None,
) -> ThermalConductivityDoc:
    """Harmonic and renormalised kappa per temperature, their ratio, and the costs.

    Missing inputs (a stopped SSCHA or kappa job) arrive as None and are reported as "not
    computed" for that temperature.

    Parameters
    ----------
    fc3 : dict
        ``structure``, ``supercell_matrix``, ``method``, ``n_supercells``,
        ``n_force_evaluations`` of the fc3 job.
    harmonic_kappa : dict
        ``kappa``, ``reasons``, ``min_frequency``, ``settings``, ``fc2_supercell_matrix``
        of the harmonic :class:`~tdphonon.schemas.KappaDoc` (one entry per temperature).
    renormalized_kappa : list of dict or None
        Same fields of the KappaDoc of each temperature (one temperature each); None
        when the flow has no SSCHA (only harmonic kappa).
    temperatures : list of float
        K.
    kappa_uuids : dict
        uuid of each kappa job, by label.
    n_harmonic_force_evaluations : int, optional
        Force evaluations of the harmonic fc2.
    n_sscha_force_evaluations : list of int, optional
        Force evaluations of the SSCHA per temperature.
    fc3_settings : dict, optional
        How fc3 was computed (recorded in ``settings``).
    """
    n_t = len(temperatures)
    harmonic_kappa = harmonic_kappa or {}
    h_kappa = harmonic_kappa.get("kappa") or [None] * n_t
    h_reasons = (
        harmonic_kappa.get("reasons") or ["not computed: the harmonic kappa job failed"] * n_t
    )
    r_kappa: list[list[float] | None] = []
    r_reasons: list[str | None] = []
    r_min: list[float | None] = []
    no_sscha = renormalized_kappa is None
    for temperature, doc in zip(temperatures, renormalized_kappa or [None] * n_t, strict=True):
        if no_sscha:
            r_kappa.append(None)
            r_reasons.append("not computed: no SSCHA in this flow")
            r_min.append(None)
            continue
        if not doc or doc.get("kappa") is None:
            r_kappa.append(None)
            r_reasons.append(
                f"not computed: no renormalised force constants at {temperature:g} K "
                "(the SSCHA or kappa job stopped; see its output in the store)"
            )
            r_min.append(None)
            continue
        r_kappa.append(doc["kappa"][0])
        r_reasons.append(doc["reasons"][0])
        r_min.append(doc.get("min_frequency"))
    ratios = [_ratio(r, h) for r, h in zip(r_kappa, h_kappa, strict=True)]
    n_sscha = list(n_sscha_force_evaluations or [None] * n_t)
    n_fc3 = int(fc3.get("n_supercells") or 0)
    n_fc3_total = int(fc3.get("n_force_evaluations") or n_fc3)
    total = n_fc3_total + int(n_harmonic_force_evaluations or 0) + sum(int(n or 0) for n in n_sscha)
    structure = _structure(fc3["structure"])
    settings = dict(harmonic_kappa.get("settings") or {})
    settings["fc3"] = fc3_settings or {}
    return ThermalConductivityDoc(
        formula=structure.composition.reduced_formula,
        structure=structure,
        temperatures=[float(t) for t in temperatures],
        kappa_harmonic=list(h_kappa),
        kappa_renormalized=r_kappa,
        harmonic_reasons=list(h_reasons),
        renormalized_reasons=r_reasons,
        ratio=[ratio for ratio, _ in ratios],
        ratio_trace=[trace for _, trace in ratios],
        harmonic_min_frequency=harmonic_kappa.get("min_frequency"),
        renormalized_min_frequencies=r_min,
        fc3_method=fc3.get("method") or "",
        fc3_supercell_matrix=fc3["supercell_matrix"],
        fc2_supercell_matrix=harmonic_kappa.get("fc2_supercell_matrix") or fc3["supercell_matrix"],
        settings=settings,
        n_fc3_supercells=n_fc3,
        n_harmonic_force_evaluations=n_harmonic_force_evaluations,
        n_sscha_force_evaluations=n_sscha,
        n_force_evaluations=total,
        kappa_uuids=kappa_uuids,
        provenance={"tdphonon_version": __version__},
    )
