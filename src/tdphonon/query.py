"""Query the results of tdphonon runs and campaigns in any JobStore.

Works the same on the embedded store (MontyDB, :func:`tdphonon.stores.embedded_store`)
and on MongoDB (``MongoStore`` + ``GridFSStore``): only maggma ``Store`` queries are used.

* :class:`CampaignResults`: materials and their status (completed / not converged /
  failed with the reason / running / waiting), per-temperature results as a pandas
  DataFrame (frequencies, shifts, free energies, kappa), every SSCHA iteration, the
  harmonic and SSCHA phonon objects; CSV / JSON export.
* :func:`connect_store`, :func:`connect_launchpad`: connect with a timeout and a few
  retries, and say clearly which database could not be reached
  (:class:`StoreUnreachableError`).
* :func:`ensure_indexes`: indexes on the fields users query.

Materials are told apart by the ``tdphonon_key`` metadata that
:class:`tdphonon.campaign.CampaignMaker` puts on every job; outputs of flows without it
(``tdphonon run``) are grouped by their top-level flow.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monty.json import MontyDecoder

if TYPE_CHECKING:
    import pandas as pd
    from fireworks import LaunchPad
    from jobflow import JobStore
    from maggma.core import Store

__all__ = [
    "INDEXED_FIELDS",
    "CampaignResults",
    "StoreUnreachableError",
    "check_integrity",
    "connect_launchpad",
    "connect_store",
    "describe_store",
    "ensure_indexes",
]

logger = logging.getLogger(__name__)

KEY_FIELD = "tdphonon_key"
FINETUNE_KEY_FIELD = "tdphonon_finetune_key"

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

#: Scalar per-temperature fields of SSCHATemperatureDoc exported in tables.
TEMPERATURE_FIELDS = (
    "temperature",
    "statistics",
    "converged",
    "message",
    "free_energy",
    "free_energy_error",
    "free_energy_note",
    "mean_frequency_shift",
    "min_frequency",
    "has_imaginary_modes",
    "harmonic_has_imaginary_modes",
    "stabilised",
    "n_iterations",
    "n_force_evaluations",
)

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
    "output.labelled_frequencies",
    "output.frequency_shifts",
    "output.temperatures",
    "output.kappa_harmonic",
    "output.kappa_renormalized",
    *[f"output.{name}" for name in TEMPERATURE_FIELDS],
]


class StoreUnreachableError(ConnectionError):
    """The database of a JobStore or LaunchPad cannot be reached."""


# -- connecting ---------------------------------------------------------------------------------


def describe_store(store: Store | JobStore) -> str:
    """Where a store lives, for messages (URI or host:port/database.collection; no password)."""
    store = getattr(store, "docs_store", store)
    uri = getattr(store, "uri", None)
    if uri:
        from pymongo.uri_parser import parse_uri

        try:
            parsed = parse_uri(uri)
            hosts = ",".join(f"{h}:{p}" for h, p in parsed["nodelist"])
            return f"mongodb://{hosts}/{parsed.get('database') or store.database}"
        except Exception:
            return "the MongoDB URI of the store"
    if hasattr(store, "host") and hasattr(store, "port"):
        return f"mongodb://{store.host}:{store.port}/{store.database}.{store.collection_name}"
    if hasattr(store, "database_path"):
        return f"embedded store {store.database_path}"
    return type(store).__name__


def _connection_errors() -> tuple[type[BaseException], ...]:
    from pymongo.errors import ConnectionFailure, OperationFailure, ServerSelectionTimeoutError

    return (ConnectionFailure, ServerSelectionTimeoutError, OperationFailure, OSError)


#: Server selection timeout of clients whose configuration sets none, ms.
DEFAULT_TIMEOUT_MS = 5000


def _set_timeout(store: Any, timeout_ms: int | None) -> None:
    kwargs = getattr(store, "mongoclient_kwargs", None)
    if isinstance(kwargs, dict):
        for name in ("serverSelectionTimeoutMS", "connectTimeoutMS"):
            if timeout_ms is None:
                kwargs.setdefault(name, DEFAULT_TIMEOUT_MS)
            else:
                kwargs[name] = timeout_ms


def _short(error: BaseException | None) -> str:
    """First part of a pymongo error (without the topology description)."""
    if error is None:
        return "no answer"
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    for cut in (" (configured timeouts", ", Timeout:", ", Topology Description"):
        text = text.split(cut)[0]
    return text[:200]


def connect_store(
    store: JobStore, retries: int = 3, delay: float = 2.0, timeout_ms: int | None = None
) -> JobStore:
    """Connect a JobStore (all its stores) and check that the server answers.

    Parameters
    ----------
    store : JobStore
        The store (MongoDB stores: pymongo's ``mongoclient_kwargs`` are completed).
    retries : int
        Attempts before giving up (reading is always safe to retry).
    delay : float
        Seconds before the first retry, doubled after each.
    timeout_ms : int, optional
        Server selection and connection timeout of each attempt, ms; None keeps the
        store's own setting, or :data:`DEFAULT_TIMEOUT_MS` if it has none.

    Raises
    ------
    StoreUnreachableError
        The database cannot be reached; the message names it.
    """
    stores = [store.docs_store, *store.additional_stores.values()]
    for sub in stores:
        _set_timeout(sub, timeout_ms)
    errors = _connection_errors()
    last: BaseException | None = None
    for attempt in range(max(1, retries)):
        try:
            for sub in stores:
                sub.connect()
            store.docs_store.count({"uuid": "__tdphonon_ping__"})  # a server round trip
            return store
        except errors as error:
            last = error
            logger.warning(
                "database %s unreachable (attempt %d/%d): %s",
                describe_store(store),
                attempt + 1,
                retries,
                _short(error),
            )
            if attempt + 1 < retries:
                time.sleep(delay * 2**attempt)
    raise StoreUnreachableError(
        f"cannot reach the database {describe_store(store)} after {retries} attempt(s): "
        f"{_short(last)}"
    )


def connect_launchpad(
    launchpad: LaunchPad | str | Path | None = None,
    retries: int = 3,
    delay: float = 2.0,
    timeout_ms: int | None = None,
) -> LaunchPad:
    """The LaunchPad (from a file, or the user's FireWorks config), checked to answer.

    Parameters
    ----------
    launchpad : LaunchPad, str, Path or None
        A LaunchPad, a ``my_launchpad.yaml``, or None for ``LaunchPad.auto_load()``
        (``$FW_CONFIG_FILE`` / ``~/.fireworks``).
    retries, delay, timeout_ms
        See :func:`connect_store`.

    Raises
    ------
    StoreUnreachableError
        The launchpad's MongoDB cannot be reached; the message names host and database.
    FileNotFoundError
        ``launchpad`` names a missing file.
    """
    from fireworks import LaunchPad

    if launchpad is None:
        launchpad = LaunchPad.auto_load()
    elif not isinstance(launchpad, LaunchPad):
        path = Path(launchpad).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"launchpad file not found: {path}")
        spec = LaunchPad.from_file(str(path)).as_dict()
        kwargs = dict(spec.get("mongoclient_kwargs") or {})
        for name in ("serverSelectionTimeoutMS", "connectTimeoutMS"):
            if timeout_ms is None:
                kwargs.setdefault(name, DEFAULT_TIMEOUT_MS)
            else:
                kwargs[name] = timeout_ms
        spec["mongoclient_kwargs"] = kwargs
        launchpad = LaunchPad.from_dict(spec)
    where = f"mongodb://{launchpad.host}:{launchpad.port}/{launchpad.name}"
    if getattr(launchpad, "uri_mode", False):
        where = f"the launchpad URI (database {launchpad.name})"
    errors = _connection_errors()
    last: BaseException | None = None
    for attempt in range(max(1, retries)):
        try:
            launchpad.fireworks.find_one({}, {"fw_id": 1})
            return launchpad
        except errors as error:
            last = error
            logger.warning("launchpad %s unreachable (attempt %d/%d)", where, attempt + 1, retries)
            if attempt + 1 < retries:
                time.sleep(delay * 2**attempt)
    raise StoreUnreachableError(
        f"cannot reach the FireWorks launchpad database {where} after {retries} attempt(s): "
        f"{_short(last)}"
    )


def ensure_indexes(store: JobStore) -> dict[str, bool]:
    """Create the indexes of :data:`INDEXED_FIELDS` on the docs store (where supported).

    Returns
    -------
    dict
        Field -> whether the index exists now (embedded MontyDB stores cannot index).
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
    structure = (doc.get("output") or {}).get("structure")
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
        The campaign's store (connected here, see :func:`connect_store`).
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
        return list(self.store.docs_store.query(criteria or {}, properties=_PROPERTIES))

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
            ``n_jobs`` (stored job outputs).
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
            complete = set(expected) <= set(done) and (
                not group["kappa_expected"] or bool(group["kappa"])
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

        Columns: ``material``, ``formula``, ``key``, ``status`` and the scalars of
        :class:`~tdphonon.schemas.SSCHATemperatureDoc` (``temperature`` K,
        ``free_energy`` eV/atom, ``mean_frequency_shift`` THz, ``min_frequency`` THz,
        ``converged``...), ``kappa_harmonic`` and ``kappa_renormalized`` (W/m-K, mean of
        the diagonal of the lattice thermal conductivity with the harmonic and the SSCHA
        force constants, when computed), and ``frequencies`` /
        ``frequency_shifts`` (JSON strings: label -> THz at the labelled q-points).
        Materials without a finished temperature get one row with their status.
        """
        import pandas as pd

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
                row.update({name: output.get(name) for name in TEMPERATURE_FIELDS})
                row["kappa_harmonic"] = kappa.get(temperature, {}).get("harmonic")
                row["kappa_renormalized"] = kappa.get(temperature, {}).get("renormalized")
                row["frequencies"] = json.dumps(output.get("labelled_frequencies"))
                row["frequency_shifts"] = json.dumps(output.get("frequency_shifts"))
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
