"""JobStores for tdphonon flows and a helper that runs a flow locally.

Every job output goes to a :class:`jobflow.JobStore` whose additional store ``"data"``
holds the arrays (force constants, snapshots). Without a database server, an embedded
store on disk is used (maggma ``MontyStore`` with sqlite, one collection for documents and
one for the arrays); with MongoDB, a jobflow.yaml / JSON file describes a ``MongoStore`` +
``GridFSStore`` (GridFS has no 16 MB limit for the arrays). Outputs of replaced jobs (one
per SSCHA iteration, same uuid, increasing index) are all kept by both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from jobflow import Flow, JobStore, run_locally
from maggma.stores import MontyStore

__all__ = [
    "check_store",
    "default_store_path",
    "embedded_store",
    "get_store",
    "run_flow",
    "store_from_file",
]

#: Environment variable naming the directory of the default embedded store.
STORE_ENV_VAR = "TDPHONON_STORE_DIR"


def default_store_path() -> Path:
    """Directory of the default embedded store: ``$TDPHONON_STORE_DIR`` or ~/.tdphonon/store."""
    path = os.environ.get(STORE_ENV_VAR, "").strip()
    return Path(path).expanduser() if path else Path.home() / ".tdphonon" / "store"


def embedded_store(path: str | os.PathLike | None = None) -> JobStore:
    """JobStore in a directory on disk (MontyDB with sqlite; no server needed).

    Parameters
    ----------
    path : str or os.PathLike, optional
        Directory (created if needed); :func:`default_store_path` when None.
    """
    path = Path(path).expanduser() if path is not None else default_store_path()
    path.mkdir(parents=True, exist_ok=True)
    kwargs = {
        "database_path": str(path.resolve()),
        "database_name": "tdphonon",
        "storage": "sqlite",
    }
    return JobStore(
        MontyStore("outputs", **kwargs),
        additional_stores={"data": MontyStore("outputs_blobs", **kwargs)},
    )


def store_from_file(path: str | os.PathLike) -> JobStore:
    """JobStore described in a YAML or JSON file.

    Either jobflow's ``JobStore.from_file`` format (``docs_store`` and
    ``additional_stores`` with ``type: MongoStore`` / ``GridFSStore`` ...), a serialised
    JobStore, or a jobflow settings file with these under ``JOB_STORE``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    """
    from monty.serialization import loadfn

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"store file not found: {path}")
    spec = loadfn(path)
    if isinstance(spec, dict) and "JOB_STORE" in spec:
        spec = spec["JOB_STORE"]
    if isinstance(spec, JobStore):
        return check_store(spec)
    if not isinstance(spec, dict) or "docs_store" not in spec:
        raise ValueError(f"{path} does not describe a JobStore (no docs_store)")
    return check_store(JobStore.from_dict_spec(spec))


def check_store(store: JobStore) -> JobStore:
    """Return ``store`` if it has the additional ``"data"`` store the jobs write arrays to."""
    if "data" not in store.additional_stores:
        raise ValueError(
            "the JobStore needs an additional store named 'data' (e.g. a GridFSStore) for "
            "force constants and snapshots"
        )
    return store


def get_store(spec: str | os.PathLike | None = None) -> JobStore:
    """The JobStore named by ``spec``.

    Parameters
    ----------
    spec : str, os.PathLike or None
        None: the default embedded store; a ``.yaml``, ``.yml`` or ``.json`` file: see
        :func:`store_from_file` (connected and checked, see
        :func:`tdphonon.query.connect_store`); anything else: a directory for an embedded
        store.
    """
    if spec is None:
        return embedded_store()
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        from tdphonon.query import connect_store

        # a server that does not answer is a one-line StoreUnreachableError here, after a
        # few tries, rather than a pymongo timeout in the middle of a flow
        return connect_store(store_from_file(path))
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is neither a directory nor a .yaml/.json store file")
    return embedded_store(path)


def load_output(store: JobStore, uuid: str) -> Any:
    """Last output of a job, arrays loaded, deserialised; None if the job did not run."""
    from monty.json import MontyDecoder

    try:
        return MontyDecoder().process_decoded(store.get_output(uuid, load=True))
    except ValueError:  # no output: the job did not run (ensure_success=False)
        return None


def run_flow(
    flow: Flow, store: JobStore | None = None, ensure_success: bool = True
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Run a tdphonon flow here and return its harmonic and per-temperature results.

    Parameters
    ----------
    flow : Flow
        E.g. from :meth:`tdphonon.flows.SSCHAMaker.make`.
    store : JobStore, optional
        Where outputs go (default: :func:`get_store` ``(None)``).
    ensure_success : bool
        Raise if any job failed.

    Returns
    -------
    harmonic : dict or None
        Fields of the :class:`~tdphonon.schemas.HarmonicPhononDoc` (objects, arrays
        loaded), None if the flow has no harmonic job.
    results : list of dict
        Fields of each :class:`~tdphonon.schemas.SSCHATemperatureDoc` that finished, in
        the order of the temperatures (found anywhere in the flow, e.g. inside
        :class:`~tdphonon.flows.conductivity.SSCHAConductivityMaker`'s).
    """
    from tdphonon.jobs import harmonic_job, sscha_iteration_job
    from tdphonon.schemas import SSCHATemperatureDoc

    store = check_store(store if store is not None else get_store(None))
    run_locally(flow, store=store, create_folders=False, ensure_success=ensure_success, log=False)
    harmonic, results = None, []
    # iterflow is in dependency order: each temperature's chain starts from the previous one
    for job, _ in flow.iterflow():
        if job.function not in (harmonic_job.original, sscha_iteration_job.original):
            continue
        doc = load_output(store, job.uuid)  # last output: the chain's final document
        if isinstance(doc, SSCHATemperatureDoc):
            results.append(dict(doc))
        elif doc is not None and job.function is harmonic_job.original:
            harmonic = dict(doc)
    return harmonic, results
