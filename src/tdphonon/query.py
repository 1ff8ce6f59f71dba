"""Query the results of tdphonon runs and campaigns in any JobStore.

Works the same on the embedded store (SQLite, :func:`tdphonon.stores.embedded_store`)
and on MongoDB (``MongoStore`` + ``GridFSStore``): only maggma ``Store`` queries are used.

* :class:`CampaignResults`: materials and their status (completed / not converged /
  failed with the reason / running / waiting), per-temperature results as a pandas
  DataFrame (frequencies, shifts, free energies, kappa), every SSCHA iteration, the
  harmonic and SSCHA phonon objects; CSV / JSON export.
* :func:`read_jobstore`: the DFT force sets of atomate2 phonon workflows in a JobStore.
* :func:`ensure_indexes`: indexes on the fields users query.

The connections (timeouts, retries, :class:`~tdphonon.stores.StoreUnreachableError`) are
those of :mod:`tdphonon.stores`.

Materials are told apart by the ``tdphonon_key`` metadata
(:data:`~tdphonon.stores.KEY_FIELD`) that :class:`tdphonon.campaign.CampaignMaker` puts on
every job; outputs of flows without it (``tdphonon run``) are grouped by their top-level
flow.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monty.json import MontyDecoder

from tdphonon.stores import FINETUNE_KEY_FIELD, KEY_FIELD, connect_store

if TYPE_CHECKING:
    import pandas as pd
    from fireworks import LaunchPad
    from jobflow import JobStore

    from tdphonon.forcesets import ForceSet

__all__ = [
    "INDEXED_FIELDS",
    "CampaignResults",
    "check_integrity",
    "ensure_indexes",
    "read_jobstore",
]

logger = logging.getLogger(__name__)

#: Fields of the docs store that get an index (what :class:`CampaignResults` filters on).
INDEXED_FIELDS = (
    "uuid",
    "index",
    f"metadata.{KEY_FIELD}",
    "metadata.formula",
    "metadata.material",
    "output.temperature",
    "output.@class",
)

#: Fields of the stored documents that :class:`CampaignResults` reads (with the summary
#: fields of SSCHATemperatureDoc, :func:`_properties`).
_PROPERTIES = [
    "uuid",
    "index",
    "name",
    "metadata",
    "hosts",
    "completed_at",
    "output.@class",
    "output.structure",
    "output.failed",
    "output.stage",
    "output.iteration",
    "output.error_type",
    "output.reason",
    "output.formula",
    "output.temperature",
    "output.temperatures",
    "output.kappa_harmonic",
    "output.kappa_renormalized",
]


@functools.cache
def _properties() -> list[str]:
    from tdphonon.schemas import SSCHATemperatureDoc, summary_fields

    fields = [f"output.{name}" for name in summary_fields(SSCHATemperatureDoc)]
    return list(dict.fromkeys(_PROPERTIES + fields))


# -- store upkeep -------------------------------------------------------------------------------


def ensure_indexes(store: JobStore) -> dict[str, bool]:
    """Create the indexes of :data:`INDEXED_FIELDS` on the docs store (where supported).

    Returns
    -------
    dict
        Field -> whether the index exists now (MongoDB and the embedded SQLite store index; a
        legacy MontyDB store cannot).
    """
    docs = store.docs_store
    return {field: bool(docs.ensure_index(field)) for field in INDEXED_FIELDS}


def _blob_references(value: Any, found: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        if "blob_uuid" in value and "store" in value:
            found.append((value["store"], value["blob_uuid"]))
            return
        for item in value.values():
            _blob_references(item, found)
    elif isinstance(value, list):
        for item in value:
            _blob_references(item, found)


def check_integrity(store: JobStore, repair: bool = False) -> dict[str, list]:
    """Find job outputs whose arrays are missing, and arrays no output refers to.

    jobflow writes a job's document and then its arrays: a database lost in between
    leaves a document pointing to missing blobs (its FireWork fizzles). With
    ``repair=True`` such documents are deleted (rerunning the FireWork writes the job
    again, completely) and so are orphan blobs (left by a write that failed and was
    redone). Reads every document of the docs store (not the arrays).

    Returns
    -------
    dict
        ``missing_blobs``: ``(uuid, index)`` of incomplete outputs; ``orphan_blobs``:
        ``(store name, blob_uuid)`` not referenced by any output.
    """
    references: dict[tuple[str, str], tuple[str, int]] = {}
    for doc in store.docs_store.query({}, properties=["uuid", "index", "output"]):
        found: list[tuple[str, str]] = []
        _blob_references(doc.get("output"), found)
        for reference in found:
            references[reference] = (doc["uuid"], doc["index"])
    existing = {
        (name, blob)
        for name, data_store in store.additional_stores.items()
        for blob in data_store.distinct("blob_uuid")
    }
    missing = sorted({job for ref, job in references.items() if ref not in existing})
    orphans = sorted(existing - set(references))
    if repair:
        for uuid, index in missing:
            store.docs_store.remove_docs({"uuid": uuid, "index": index})
        for name in store.additional_stores:
            blobs = [blob for store_name, blob in orphans if store_name == name]
            if blobs:
                store.additional_stores[name].remove_docs({"blob_uuid": {"$in": blobs}})
        if missing or orphans:
            logger.warning(
                "removed %d incomplete outputs and %d orphan blobs", len(missing), len(orphans)
            )
    return {"missing_blobs": [list(m) for m in missing], "orphan_blobs": [list(o) for o in orphans]}


# -- results ------------------------------------------------------------------------------------


def _output_class(doc: dict[str, Any]) -> str | None:
    return (doc.get("output") or {}).get("@class") if isinstance(doc.get("output"), dict) else None


def _formula(doc: dict[str, Any]) -> str | None:
    formula = (doc.get("metadata") or {}).get("formula")
    if formula:
        return formula
    output = doc.get("output") or {}
    if isinstance(output.get("formula"), str):  # JobFailureDoc, ThermalConductivityDoc
        return output["formula"]
    structure = output.get("structure")
    if isinstance(structure, dict):
        from pymatgen.core import Structure

        try:
            return Structure.from_dict(structure).composition.reduced_formula
        except Exception:
            return None
    return None


def _failure_reason(output: dict[str, Any]) -> str:
    where = output.get("stage") or "job"
    if output.get("temperature") is not None:
        where += f" at {output['temperature']:g} K"
    if output.get("iteration"):
        where += f" (iteration {output['iteration']})"
    return f"{where}: {output.get('error_type')}: {output.get('reason')}"


class CampaignResults:
    """Materials, their status and their results in a JobStore.

    Parameters
    ----------
    store : JobStore
        The campaign's store (connected here, see :func:`tdphonon.stores.connect_store`).
    launchpad : LaunchPad, optional
        With it, materials not started yet are listed (``waiting``) and FIZZLED
        FireWorks give a ``failed`` status with the exception.
    retries : int
        Connection attempts.
    """

    def __init__(
        self, store: JobStore, launchpad: LaunchPad | None = None, retries: int = 3
    ) -> None:
        self.store = connect_store(store, retries=retries)
        self.launchpad = launchpad

    # -- raw documents ----------------------------------------------------------------------

    def _documents(self, criteria: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return list(self.store.docs_store.query(criteria or {}, properties=_properties()))

    @staticmethod
    def _group(doc: dict[str, Any]) -> str:
        key = (doc.get("metadata") or {}).get(KEY_FIELD)
        if key:
            return key
        hosts = doc.get("hosts") or []
        return f"flow:{hosts[-1]}" if hosts else f"job:{doc['uuid']}"

    def _criteria(self, formula: str | None, key: str | None) -> dict[str, Any]:
        criteria: dict[str, Any] = {}
        if key is not None:
            criteria[f"metadata.{KEY_FIELD}"] = key
        if formula is not None:
            from pymatgen.core import Composition

            reduced = Composition(formula).reduced_formula
            criteria = {
                **criteria,
                "$or": [{"metadata.formula": reduced}, {f"metadata.{KEY_FIELD}": None}],
            }
        return criteria

    def _collect(
        self, formula: str | None = None, key: str | None = None
    ) -> dict[str, dict[str, Any]]:
        reduced = None
        if formula is not None:
            from pymatgen.core import Composition

            reduced = Composition(formula).reduced_formula
        groups: dict[str, dict[str, Any]] = {}
        latest: dict[str, dict[str, Any]] = {}
        for doc in self._documents(self._criteria(formula, key)):
            if (doc.get("metadata") or {}).get(FINETUNE_KEY_FIELD):
                continue  # the campaign's shared fine-tuning, not a material
            previous = latest.get(doc["uuid"])
            if previous is None or doc["index"] > previous["index"]:
                latest[doc["uuid"]] = doc
        for doc in latest.values():
            group_id = self._group(doc)
            group = groups.setdefault(
                group_id,
                {
                    "key": group_id,
                    "material": None,
                    "formula": None,
                    "expected": None,
                    "kappa_expected": False,
                    "temperatures": {},
                    "failures": [],
                    "unfinished": [],
                    "kappa": [],
                    "harmonic": None,
                    "n_jobs": 0,
                },
            )
            metadata = doc.get("metadata") or {}
            group["material"] = group["material"] or metadata.get("material")
            group["formula"] = group["formula"] or _formula(doc)
            if metadata.get("temperatures") is not None:
                group["expected"] = [float(t) for t in metadata["temperatures"]]
            group["kappa_expected"] = group["kappa_expected"] or bool(metadata.get("kappa"))
            group["n_jobs"] += 1
            output = doc.get("output")
            cls = _output_class(doc)
            if not isinstance(output, dict):
                continue
            if output.get("failed") or cls == "JobFailureDoc":
                group["failures"].append(output)
            elif cls == "SSCHATemperatureDoc":
                group["temperatures"][float(output["temperature"])] = doc
            elif cls == "SSCHAIterationDoc":  # the last stored step of a chain not finished
                group["unfinished"].append(float(output["temperature"]))
            elif cls == "HarmonicPhononDoc":
                group["harmonic"] = doc
            elif cls == "ThermalConductivityDoc":
                group["kappa"].append(output)
        if reduced is not None:
            groups = {k: g for k, g in groups.items() if g["formula"] == reduced}
        for group in groups.values():
            group["material"] = group["material"] or group["formula"] or group["key"]
        return groups

    def _launchpad_states(self) -> dict[str, dict[str, Any]]:
        """Key -> {"states": [...], "fizzled": [reasons], "material", "formula"}."""
        result: dict[str, dict[str, Any]] = {}
        if self.launchpad is None:
            return result
        lp = self.launchpad
        for fw in lp.fireworks.find(
            {f"spec.{KEY_FIELD}": {"$exists": True}},
            {
                "fw_id": 1,
                "state": 1,
                "name": 1,
                "spec.material": 1,
                "spec.formula": 1,
                f"spec.{KEY_FIELD}": 1,
                "launches": 1,
            },
        ):
            spec = fw.get("spec", {})
            entry = result.setdefault(
                spec[KEY_FIELD],
                {
                    "states": [],
                    "fizzled": [],
                    "material": spec.get("material"),
                    "formula": spec.get("formula"),
                },
            )
            entry["states"].append(fw["state"])
            if fw["state"] == "FIZZLED" and fw.get("launches"):
                launch = lp.launches.find_one(
                    {"launch_id": fw["launches"][-1]}, {"action.stored_data": 1}
                )
                data = ((launch or {}).get("action") or {}).get("stored_data") or {}
                trace = (data.get("_exception") or {}).get("_stacktrace") or "unknown error"
                last = [line for line in str(trace).strip().splitlines() if line.strip()]
                entry["fizzled"].append(
                    f"job '{fw['name']}' fizzled: {last[-1] if last else trace}"
                )
        return result

    # -- public API -------------------------------------------------------------------------

    def materials(
        self, formula: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Every material with its status.

        Returns
        -------
        list of dict
            ``key``, ``material``, ``formula``, ``status`` (``completed``, ``not
            converged``, ``failed``, ``running``, ``waiting``), ``reason`` (why it failed
            or did not converge), ``temperatures_done`` (K), ``temperatures`` (expected),
            ``n_jobs`` (stored job outputs). ``failed``: a job stored a
            :class:`~tdphonon.schemas.JobFailureDoc` (a failure of the material, or any
            exception in a flow run by :func:`tdphonon.stores.run_flow`) or its FireWork
            fizzled; ``completed`` / ``not converged``: every expected temperature
            finished; ``running``: neither (without a launchpad this includes a run
            killed without a trace).
        """
        groups = self._collect(formula)
        launchpad = self._launchpad_states()
        rows = []
        for key, group in groups.items():
            done = sorted(group["temperatures"])
            expected = group["expected"] or done
            reasons = [_failure_reason(f) for f in group["failures"]]
            unconverged = [
                f"{t:g} K: {d['output'].get('message')}"
                for t, d in sorted(group["temperatures"].items())
                if not d["output"].get("converged")
            ]
            lp = launchpad.get(key, {})
            reasons.extend(lp.get("fizzled", []))
            # every expected temperature finished (flows stored without the expected ones
            # in their metadata: no SSCHA chain left part-way), kappa too if asked for
            complete = (
                set(expected) <= set(done)
                and not set(group["unfinished"]) - set(done)
                and (not group["kappa_expected"] or bool(group["kappa"]))
            )
            if reasons:
                state = "failed"
            elif complete:
                state = "not converged" if unconverged else "completed"
            elif lp and all(s in ("WAITING", "READY") for s in lp["states"]) and not done:
                state = "waiting"
            else:
                state = "running"
            rows.append(
                {
                    "key": key,
                    "material": group["material"],
                    "formula": group["formula"],
                    "status": state,
                    "reason": "; ".join(reasons or unconverged) or None,
                    "temperatures_done": done,
                    "temperatures": expected,
                    "n_jobs": group["n_jobs"],
                }
            )
        for key, entry in launchpad.items():
            if key in groups:
                continue
            if formula is not None and entry.get("formula") != _reduced(formula):
                continue
            state = (
                "failed"
                if entry["fizzled"]
                else (
                    "waiting"
                    if all(s in ("WAITING", "READY") for s in entry["states"])
                    else "running"
                )
            )
            rows.append(
                {
                    "key": key,
                    "material": entry.get("material"),
                    "formula": entry.get("formula"),
                    "status": state,
                    "reason": "; ".join(entry["fizzled"]) or None,
                    "temperatures_done": [],
                    "temperatures": None,
                    "n_jobs": 0,
                }
            )
        if status is not None:
            rows = [row for row in rows if row["status"] == status]
        return sorted(rows, key=lambda row: (str(row["formula"]), str(row["material"])))

    def table(self, formula: str | None = None) -> pd.DataFrame:
        """One row per (material, temperature) with the SSCHA results.

        Columns: ``material``, ``formula``, ``key``, ``status``, ``reason``, the summary
        of :class:`~tdphonon.schemas.SSCHATemperatureDoc`
        (:meth:`~tdphonon.schemas.Document.summarise`: ``temperature`` K, ``free_energy``
        eV/atom, ``mean_frequency_shift`` THz, ``min_frequency`` THz (every mode),
        ``min_frequency_excluding_acoustic_pockets`` THz (what ``has_imaginary_modes``
        judges; for documents older than this field, their ``min_frequency``),
        ``converged``...; its lists and dicts as JSON strings, e.g. ``frequencies`` and
        ``frequency_shifts``: label -> THz at the labelled q-points), then
        ``kappa_harmonic`` and ``kappa_renormalized`` (W/m-K, mean of the diagonal of the
        lattice thermal conductivity with the harmonic and the SSCHA force constants, when
        computed).
        Materials without a finished temperature get one row with their status.
        """
        import pandas as pd

        from tdphonon.schemas import SSCHATemperatureDoc

        groups = self._collect(formula)
        statuses = {row["key"]: row for row in self.materials(formula)}
        rows = []
        for key, group in groups.items():
            status = statuses.get(key, {})
            base = {
                "material": group["material"],
                "formula": group["formula"],
                "key": key,
                "status": status.get("status"),
                "reason": status.get("reason"),
            }
            kappa = _kappa_by_temperature(group["kappa"])
            if not group["temperatures"]:
                rows.append(base)
                continue
            for temperature, doc in sorted(group["temperatures"].items()):
                output = doc["output"]
                row = dict(base)
                for name, value in SSCHATemperatureDoc.summarise(output).items():
                    row[name] = json.dumps(value) if isinstance(value, dict | list) else value
                if row["min_frequency_excluding_acoustic_pockets"] is None:
                    # documents before the pockets were reported: min_frequency left them out
                    row["min_frequency_excluding_acoustic_pockets"] = row["min_frequency"]
                row["kappa_harmonic"] = kappa.get(temperature, {}).get("harmonic")
                row["kappa_renormalized"] = kappa.get(temperature, {}).get("renormalized")
                rows.append(row)
        for key, status in statuses.items():
            if key not in groups:
                rows.append(
                    {k: status[k] for k in ("material", "formula", "key", "status", "reason")}
                )
        return pd.DataFrame(rows)

    def frequencies(self, key: str) -> dict[float, dict[str, Any]]:
        """Temperature -> labelled frequencies, harmonic ones and shifts (THz) of a material."""
        group = self._collect(key=key).get(key)
        if group is None:
            raise KeyError(f"no material with key {key} in the store")
        return {
            t: {
                "frequencies": d["output"].get("labelled_frequencies"),
                "shifts": d["output"].get("frequency_shifts"),
                "mean_shift": d["output"].get("mean_frequency_shift"),
                "free_energy": d["output"].get("free_energy"),
            }
            for t, d in sorted(group["temperatures"].items())
        }

    def outputs(self, key: str, load: bool = True) -> list[dict[str, Any]]:
        """Every stored output of a material (all jobs, all indices), in completion order.

        Parameters
        ----------
        key : str
            The material's key (``materials()[i]["key"]``).
        load : bool
            Load the arrays from the data store and deserialise (pydantic documents,
            pymatgen phonon objects, numpy arrays); False gives the raw documents with
            blob references.

        Returns
        -------
        list of dict
            ``uuid``, ``index``, ``name``, ``completed_at`` and ``output`` of each job.
        """
        docs = self.store.query(
            {f"metadata.{KEY_FIELD}": key},
            properties=["uuid", "index", "name", "completed_at", "output"],
            sort={"completed_at": 1, "index": 1},
            load=load,
        )
        decoder = MontyDecoder()
        return [
            {
                **{k: d.get(k) for k in ("uuid", "index", "name", "completed_at")},
                "output": decoder.process_decoded(d["output"]) if load else d["output"],
            }
            for d in docs
        ]

    def export(self, path: str | Path, formula: str | None = None) -> Path:
        """Write :meth:`table` to ``path`` (``.csv`` or ``.json``, records)."""
        path = Path(path).expanduser()
        frame = self.table(formula)
        if path.suffix.lower() == ".csv":
            frame.to_csv(path, index=False)
        elif path.suffix.lower() == ".json":
            frame.to_json(path, orient="records", indent=1)
        else:
            raise ValueError(f"export to .csv or .json, not {path.suffix or path.name}")
        return path


def _reduced(formula: str) -> str:
    from pymatgen.core import Composition

    return Composition(formula).reduced_formula


def _kappa_by_temperature(outputs: list[dict[str, Any]]) -> dict[float, dict[str, float]]:
    """Temperature (K) -> {"harmonic", "renormalized"}: mean of kappa xx, yy, zz, W/m-K.

    From :class:`~tdphonon.schemas.ThermalConductivityDoc` (Voigt order xx yy zz yz xz xy).
    """
    result: dict[float, dict[str, float]] = {}
    for output in outputs:
        temperatures = output.get("temperatures") or []
        for kind in ("harmonic", "renormalized"):
            values = output.get(f"kappa_{kind}") or [None] * len(temperatures)
            for temperature, kappa in zip(temperatures, values, strict=False):
                if kappa is not None and len(kappa) >= 3:
                    entry = result.setdefault(float(temperature), {})
                    entry[kind] = float(sum(kappa[:3]) / 3)
    return result


def group_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Number of materials per status."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["status"]] += 1
    return dict(counts)


# -- force sets of atomate2 phonon workflows ----------------------------------------------------


def read_jobstore(
    store: Any,
    *,
    formula: str | None = None,
    flow_uuid: str | None = None,
    query: dict[str, Any] | None = None,
) -> list[ForceSet]:
    """Read the DFT force sets of atomate2 phonon workflows from a jobflow JobStore.

    The ``generate_frequencies_eigenvectors`` job of atomate2's ``PhononMaker`` stores a
    ``PhononBSDOSDoc`` with ``structure``, ``supercell_matrix``, ``primitive_matrix`` and
    ``uuids.displacements_uuids``, the uuids of the static jobs of the displaced supercells;
    each of those stores a task document whose ``output`` has the displaced ``structure``,
    ``forces`` and (optionally) ``energy`` and ``stress`` (kBar for VASP ``TaskDoc``).
    Those are read back here, one :class:`~tdphonon.forcesets.ForceSet` per phonon
    document.

    Parameters
    ----------
    store : jobflow.JobStore
        The store (connected or not).
    formula : str, optional
        Only documents with this reduced formula (``output.formula_pretty``).
    flow_uuid : str, optional
        Only jobs of this flow (its uuid is in the job documents' ``hosts``).
    query : dict, optional
        Any further criteria on the job documents.

    Returns
    -------
    list of tdphonon.forcesets.ForceSet

    Raises
    ------
    tdphonon.forcesets.ForceSetError
        If no phonon document matches, or displacement jobs are missing from the store.
    """
    import numpy as np
    from ase import Atoms
    from phonopy import Phonopy
    from pymatgen.core import Structure

    from tdphonon.forcesets import ForceSet, ForceSetError, finite_energy
    from tdphonon.structures import minimum_image_vectors, to_ase_atoms, to_phonopy_atoms

    criteria: dict[str, Any] = {"output.@class": "PhononBSDOSDoc"}
    if formula is not None:
        criteria["output.formula_pretty"] = formula
    if flow_uuid is not None:
        criteria["hosts"] = flow_uuid
    criteria.update(query or {})
    store.connect()
    docs = list(store.query(criteria, properties=["uuid", "index"]))
    if not docs:
        raise ForceSetError(f"no atomate2 phonon document in the store matches {criteria}")
    latest: dict[str, int] = {}
    for d in docs:
        latest[d["uuid"]] = max(latest.get(d["uuid"], 0), d.get("index", 1))
    decoder = MontyDecoder()
    sets = []
    for uuid in sorted(latest):
        doc = store.get_output(uuid, load=True)
        structure = doc["structure"]
        structure = (
            structure if isinstance(structure, Structure) else Structure.from_dict(structure)
        )
        uuids = (doc.get("uuids") or {}).get("displacements_uuids") or []
        if not uuids:
            raise ForceSetError(f"phonon document {uuid} records no displacement jobs")
        smat = np.asarray(doc["supercell_matrix"], dtype=int)
        prim = doc.get("primitive_matrix")
        ph = Phonopy(to_phonopy_atoms(structure), smat, primitive_matrix=prim)
        reference = to_ase_atoms(ph.supercell)
        supercells, forces, energies, stresses = [], [], [], []
        for disp_uuid in dict.fromkeys(uuids):
            try:
                task = decoder.process_decoded(store.get_output(disp_uuid, load=True))
            except ValueError:
                raise ForceSetError(
                    f"displacement job {disp_uuid} of phonon document {uuid} is not in the store"
                ) from None
            out = task.get("output") if isinstance(task, dict) else getattr(task, "output", None)
            get = (
                (lambda k, o=out: o.get(k))
                if isinstance(out, dict)
                else (lambda k, o=out: getattr(o, k, None))
            )
            displaced = get("structure")
            if isinstance(displaced, dict):
                displaced = Structure.from_dict(displaced)
            f = get("forces")
            if displaced is None or f is None:
                raise ForceSetError(
                    f"displacement job {disp_uuid} has no output.structure / output.forces"
                )
            atoms = to_ase_atoms(displaced)
            if len(atoms) != len(reference):
                raise ForceSetError(
                    f"displacement job {disp_uuid}: {len(atoms)} atoms, supercell has "
                    f"{len(reference)}"
                )
            # same atom order as phonopy's supercell (atomate2 builds displacements with it)
            supercells.append(
                Atoms(
                    reference.get_chemical_symbols(),
                    cell=atoms.cell,
                    positions=atoms.positions,
                    pbc=True,
                )
            )
            forces.append(np.asarray(f, dtype=float))
            energies.append(finite_energy(get("energy")))
            s = get("stress")
            # VASP TaskDoc stress: kBar, VASP sign (positive = compressive); to eV/Å3, ASE sign
            stresses.append(None if s is None else -np.asarray(s, dtype=float) * 1e-1 / 160.21766)
        disps = np.array(
            [
                minimum_image_vectors(a.positions - reference.positions, reference.cell)
                for a in supercells
            ]
        )
        dataset: dict[str, Any]
        moved = [np.flatnonzero(np.linalg.norm(d, axis=1) > 1e-8) for d in disps]
        if all(len(m) == 1 for m in moved):
            dataset = {
                "natom": len(reference),
                "first_atoms": [
                    {"number": int(m[0]), "displacement": d[m[0]].tolist()}
                    for m, d in zip(moved, disps, strict=True)
                ],
            }
        else:
            dataset = {"displacements": disps}
        sets.append(
            ForceSet(
                name=str(doc.get("formula_pretty") or structure.composition.reduced_formula),
                unitcell=to_ase_atoms(structure),
                supercell_matrix=smat,
                primitive_matrix=None if prim is None else np.asarray(prim),
                reference=reference,
                supercells=supercells,
                forces=forces,
                energies=energies,
                stresses=stresses,
                dataset=dataset,
                harmonic_indices=list(range(len(supercells))),
                source=f"jobstore phonon document {uuid}",
            )
        )
    return sets
