"""JobStores for tdphonon flows, every connection to a database, and local runs of a flow.

Every job output goes to a :class:`jobflow.JobStore` whose additional store ``"data"``
holds the arrays (force constants, snapshots). Without a database server, an embedded
store on disk is used (:func:`embedded_store`: one SQLite file, a
:class:`~tdphonon.sqlite_store.SQLiteStore` for documents and one for the arrays, indexed
lookups, several processes at once; a folder written by earlier versions with MontyDB is
still read, see :func:`migrate_embedded_store`); with MongoDB, a jobflow.yaml / JSON file
describes a ``MongoStore`` + ``GridFSStore`` (GridFS has no 16 MB limit for the arrays).
Outputs of replaced jobs (one per SSCHA iteration, same uuid, increasing index) are all
kept by both.

:func:`connect_store` and :func:`connect_launchpad` (the FireWorks database) connect with
a timeout and a few retries, and say in one line which database cannot be reached
(:class:`StoreUnreachableError`). The metadata fields :data:`KEY_FIELD` and
:data:`FINETUNE_KEY_FIELD` tell the materials of a campaign apart in a store (set by
:class:`tdphonon.campaign.CampaignMaker`, read by :mod:`tdphonon.query`).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import Flow, Job, JobStore, Response, run_locally

from tdphonon.sqlite_store import SQLiteStore  # also a store type for JobStore files

if TYPE_CHECKING:
    from fireworks import LaunchPad
    from maggma.core import Store

__all__ = [
    "DEFAULT_TIMEOUT_MS",
    "FINETUNE_KEY_FIELD",
    "KEY_FIELD",
    "STORE_FILE_SUFFIXES",
    "JobFailedError",
    "StoreConfigError",
    "StoreUnreachableError",
    "check_store",
    "check_store_spec",
    "connect_launchpad",
    "connect_store",
    "connection_budget",
    "default_store_path",
    "describe_store",
    "embedded_store",
    "get_store",
    "migrate_embedded_store",
    "run_flow",
    "store_from_file",
]

#: Environment variable naming the directory of the default embedded store.
STORE_ENV_VAR = "TDPHONON_STORE_DIR"

logger = logging.getLogger(__name__)

#: Suffixes of files describing a JobStore (anything else names an embedded store's folder).
STORE_FILE_SUFFIXES = (".yaml", ".yml", ".json")

#: Metadata field holding a material's identity (structure + settings) in jobs and workflows.
KEY_FIELD = "tdphonon_key"

#: Metadata field of the shared fine-tuning job of a campaign.
FINETUNE_KEY_FIELD = "tdphonon_finetune_key"


class StoreConfigError(ValueError):
    """A store file or folder that does not describe a usable JobStore (one-line message)."""


def _one_line(error: BaseException) -> str:
    """The message of a parser's error on one line (YAML errors span several)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def default_store_path() -> Path:
    """Directory of the default embedded store: ``$TDPHONON_STORE_DIR`` or ~/.tdphonon/store."""
    path = os.environ.get(STORE_ENV_VAR, "").strip()
    return Path(path).expanduser() if path else Path.home() / ".tdphonon" / "store"


#: The SQLite file of an embedded store, in its folder.
EMBEDDED_STORE_FILE = "tdphonon.sqlite"

#: Marker file of an embedded store written by MontyDB (tdphonon before the SQLite store).
_MONTYDB_MARKER = "monty.storage.cfg"

#: Collections of an embedded store: job documents, and the arrays (``data`` store).
_EMBEDDED_COLLECTIONS = {"docs": "outputs", "data": "outputs_blobs"}


def _embedded_indexes() -> dict[str, list[str]]:
    """Indexed fields of the embedded stores: what jobflow and tdphonon look documents up by."""
    from tdphonon.query import INDEXED_FIELDS

    docs = ["uuid", "index", *INDEXED_FIELDS, "hosts", f"metadata.{FINETUNE_KEY_FIELD}"]
    return {"docs": list(dict.fromkeys(docs)), "data": ["blob_uuid", "job_uuid", "job_index"]}


def sqlite_job_store(file: Path | str) -> JobStore:
    """The embedded store's JobStore in the SQLite ``file`` (its collections and indexes);
    :data:`~tdphonon.sqlite_store.IN_MEMORY` keeps it in memory."""
    indexes = _embedded_indexes()
    docs, data = (
        SQLiteStore(file, _EMBEDDED_COLLECTIONS[name], indexes=indexes[name], key=key)
        for name, key in (("docs", "uuid"), ("data", "blob_uuid"))
    )
    return JobStore(docs, additional_stores={"data": data})


def _montydb_job_store(path: Path) -> JobStore:
    from maggma.stores import MontyStore

    kwargs = {"database_path": str(path), "database_name": "tdphonon", "storage": "sqlite"}
    return JobStore(
        MontyStore(_EMBEDDED_COLLECTIONS["docs"], **kwargs),
        additional_stores={"data": MontyStore(_EMBEDDED_COLLECTIONS["data"], **kwargs)},
    )


def embedded_store(path: str | os.PathLike | None = None) -> JobStore:
    """JobStore in a directory on disk (one SQLite file; no server needed).

    The documents and the arrays are two :class:`~tdphonon.sqlite_store.SQLiteStore`
    collections of ``<path>/tdphonon.sqlite``, indexed by the fields jobflow and
    :mod:`tdphonon.query` look them up by; several processes (workers of a campaign on
    one machine) can write to it at once. A directory holding a MontyDB store of earlier
    tdphonon versions (and no ``tdphonon.sqlite``) is opened with maggma's ``MontyStore``
    as before (queries scan every document): :func:`migrate_embedded_store` converts it.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Directory (created if needed); :func:`default_store_path` when None.
    """
    path = Path(path).expanduser() if path is not None else default_store_path()
    path.mkdir(parents=True, exist_ok=True)
    path = path.resolve()
    file = path / EMBEDDED_STORE_FILE
    if not file.exists() and (path / _MONTYDB_MARKER).exists():
        logger.warning(
            "%s is a MontyDB store of an earlier tdphonon (slow with many documents); convert "
            'it with: python -c "from tdphonon.stores import migrate_embedded_store; '
            "migrate_embedded_store('%s')\"",
            path,
            path,
        )
        return _montydb_job_store(path)
    return sqlite_job_store(file)


def migrate_embedded_store(path: str | os.PathLike | None = None) -> dict[str, int]:
    """Copy a MontyDB embedded store (earlier tdphonon versions) into its SQLite file.

    Every document and array is copied into ``<path>/tdphonon.sqlite`` (written under
    another name, then renamed: an interrupted copy leaves the MontyDB store in use);
    from then on :func:`embedded_store` opens the SQLite file. The MontyDB files are left
    in place (delete them once the copy is checked).

    Parameters
    ----------
    path : str or os.PathLike, optional
        The store's directory; :func:`default_store_path` when None.

    Returns
    -------
    dict
        Documents copied per collection (``outputs``, ``outputs_blobs``).

    Raises
    ------
    StoreConfigError
        ``path`` holds no MontyDB store, or already a ``tdphonon.sqlite``.
    """
    path = (Path(path).expanduser() if path is not None else default_store_path()).resolve()
    file = path / EMBEDDED_STORE_FILE
    if not (path / _MONTYDB_MARKER).exists():
        raise StoreConfigError(f"{path} holds no MontyDB store ({_MONTYDB_MARKER} not found)")
    if file.exists():
        raise StoreConfigError(f"{file} exists already: the store was migrated")
    partial = file.with_name(file.name + ".partial")
    for leftover in path.glob(partial.name + "*"):  # of an interrupted migration
        leftover.unlink()
    old, new = _montydb_job_store(path), sqlite_job_store(partial)
    copied = {}
    for old_store, new_store in [
        (old.docs_store, new.docs_store),
        (old.additional_stores["data"], new.additional_stores["data"]),
    ]:
        old_store.connect()
        new_store.connect()
        batch, count = [], 0
        for doc in old_store.query({}):  # documents as they are (blobs, checkpoints...)
            doc.pop("_id", None)
            batch.append(doc)
            if len(batch) == 100:
                new_store.insert(batch)
                count, batch = count + len(batch), []
        if batch:
            new_store.insert(batch)
        copied[old_store.collection_name] = count + len(batch)
        old_store.close()
        new_store.close()
    partial.rename(file)
    logger.info("migrated %s: %s", path, copied)
    return copied


def store_from_file(path: str | os.PathLike) -> JobStore:
    """JobStore described in a YAML or JSON file.

    Either jobflow's ``JobStore.from_file`` format (``docs_store`` and
    ``additional_stores`` with ``type: MongoStore`` / ``GridFSStore`` ...), a serialised
    JobStore, or a jobflow settings file with these under ``JOB_STORE``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Raises
    ------
    FileNotFoundError
        No such file.
    StoreConfigError
        The file does not parse, or does not describe a JobStore with a ``docs_store`` and
        an additional store ``data``, or names an unknown store type.
    """
    from monty.serialization import loadfn
    from ruamel.yaml import YAMLError

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"store file not found: {path}")
    try:
        spec = loadfn(path)
    except (YAMLError, ValueError, TypeError, KeyError, AttributeError, ImportError) as error:
        # malformed YAML / JSON, or a serialised object whose class cannot be built
        raise StoreConfigError(f"cannot read {path}: {_one_line(error)}") from None
    if isinstance(spec, dict) and "JOB_STORE" in spec:
        spec = spec["JOB_STORE"]
    if isinstance(spec, JobStore):
        return check_store(spec)
    if not isinstance(spec, dict) or not isinstance(spec.get("docs_store"), dict):
        raise StoreConfigError(
            f"{path} does not describe a JobStore: it needs a 'docs_store' mapping (and "
            "'additional_stores' with 'data'), at the top or under JOB_STORE"
        )
    additional = spec.get("additional_stores")
    if not isinstance(additional, dict) or not isinstance(additional.get("data"), dict):
        raise StoreConfigError(
            f"{path}: the JobStore needs 'additional_stores' with a store named 'data' (e.g. "
            "a GridFSStore) for force constants and snapshots"
        )
    for name, store_spec in [("docs_store", spec["docs_store"]), ("data", additional["data"])]:
        if "type" not in store_spec:
            raise StoreConfigError(f"{path}: {name} has no 'type' (e.g. MongoStore)")
    try:
        store = JobStore.from_dict_spec(spec)
    except KeyError as error:  # jobflow looks the type up in the maggma Store classes
        raise StoreConfigError(
            f"{path}: unknown store type {error} (a maggma Store: MongoStore, GridFSStore, "
            "SQLiteStore, MontyStore, MemoryStore, ...)"
        ) from None
    except (TypeError, ValueError) as error:  # e.g. a keyword the store does not take
        raise StoreConfigError(f"{path}: cannot build the JobStore: {_one_line(error)}") from None
    return check_store(store)


def check_store(store: JobStore) -> JobStore:
    """Return ``store`` if it has the additional ``"data"`` store the jobs write arrays to.

    Raises
    ------
    StoreConfigError
        It has none.
    """
    if "data" not in store.additional_stores:
        raise StoreConfigError(
            "the JobStore needs an additional store named 'data' (e.g. a GridFSStore) for "
            "force constants and snapshots"
        )
    return store


def check_store_spec(spec: str | os.PathLike) -> None:
    """Check, without connecting, that ``spec`` can name a store for :func:`get_store`.

    Parameters
    ----------
    spec : str or os.PathLike
        A ``.yaml`` / ``.yml`` / ``.json`` file (read and checked by :func:`store_from_file`),
        or a folder for an embedded store (created if missing).

    Raises
    ------
    FileNotFoundError
        A store file that does not exist.
    StoreConfigError
        A store file that does not describe a JobStore with a ``data`` store, or a path that
        is neither such a file nor a folder.
    """
    path = Path(spec).expanduser()
    if path.suffix.lower() in STORE_FILE_SUFFIXES:
        store_from_file(path)
    elif path.exists() and not path.is_dir():
        raise StoreConfigError(f"{path} is neither a directory nor a .yaml/.yml/.json store file")


# -- connecting ---------------------------------------------------------------------------------


class StoreUnreachableError(ConnectionError):
    """The database of a JobStore or LaunchPad cannot be reached."""


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

    if not isinstance(launchpad, LaunchPad):
        if launchpad is None:
            loaded = LaunchPad.auto_load()
        else:
            path = Path(launchpad).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"launchpad file not found: {path}")
            loaded = LaunchPad.from_file(str(path))
        # rebuilt with the timeouts: pymongo's own default (30 s per attempt) made an
        # unreachable launchpad take minutes to report
        spec = loaded.as_dict()
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


def connection_budget(retries: int, total_s: float) -> dict[str, Any]:
    """``retries``, ``timeout_ms`` and ``delay`` of :func:`connect_store` and
    :func:`connect_launchpad` that give up after about ``total_s`` seconds.

    All attempts (4/5 of ``total_s``, shared equally) and the pauses between them (the
    rest, doubling) together take ``total_s`` seconds.

    Parameters
    ----------
    retries : int
        Connection attempts (at least 1).
    total_s : float
        Seconds for all attempts and pauses together.
    """
    if retries == 1:
        return {"retries": 1, "timeout_ms": max(1, round(total_s * 1000)), "delay": 0.0}
    return {
        "retries": retries,
        "timeout_ms": max(1, int(0.8 * total_s * 1000 / retries)),
        "delay": 0.2 * total_s / (2 ** (retries - 1) - 1),
    }


def get_store(spec: str | os.PathLike | None = None, **connect_kwargs: Any) -> JobStore:
    """The JobStore named by ``spec``.

    Parameters
    ----------
    spec : str, os.PathLike or None
        None: the default embedded store; a ``.yaml``, ``.yml`` or ``.json`` file: see
        :func:`store_from_file` (connected and checked, see :func:`connect_store`);
        anything else: a directory for an embedded store.
    **connect_kwargs
        ``retries``, ``delay``, ``timeout_ms`` of :func:`connect_store` for a store file.

    Raises
    ------
    FileNotFoundError, StoreConfigError
        See :func:`check_store_spec`.
    StoreUnreachableError
        The database of a store file does not answer.
    """
    if spec is None:
        return embedded_store()
    path = Path(spec).expanduser()
    if path.suffix.lower() in STORE_FILE_SUFFIXES:
        # a server that does not answer is a one-line StoreUnreachableError here, after a
        # few tries, rather than a pymongo timeout in the middle of a flow
        return connect_store(store_from_file(path), **connect_kwargs)
    check_store_spec(path)  # a folder, not some other file
    return embedded_store(path)


def load_output(store: JobStore, uuid: str) -> Any:
    """Last output of a job, arrays loaded, deserialised; None if the job did not run."""
    from monty.json import MontyDecoder

    try:
        return MontyDecoder().process_decoded(store.get_output(uuid, load=True))
    except ValueError:  # no output: the job did not run (ensure_success=False)
        return None


class JobFailedError(RuntimeError):
    """A job of a flow run by :func:`run_flow` failed; its failure is in the JobStore.

    Parameters
    ----------
    failures : list of JobFailureDoc
        One per failed job, in the order they failed (each stored as that job's output).

    Attributes
    ----------
    failures : list of JobFailureDoc
    """

    def __init__(self, failures: list[Any]) -> None:
        from tdphonon.query import _failure_reason

        self.failures = list(failures)
        first = failures[0]
        text = _failure_reason(first.model_dump())
        text = text if len(text) <= 300 else text[:297] + "..."
        more = f" (and {len(failures) - 1} more failed jobs)" if len(failures) > 1 else ""
        formula = f"{first.formula}: " if first.formula else ""
        super().__init__(
            f"{formula}{text}{more}; stored in the JobStore ('tdphonon query --status failed')"
        )


def _jobs_of(flow: Flow | Job) -> list[Job]:
    """Every job of a flow, those of nested flows included."""
    if isinstance(flow, Job):
        return [flow]
    return [job for item in flow.jobs for job in _jobs_of(item)]


#: Stages of a tdphonon flow, told by the start of a job's name: the Makers name their
#: jobs "harmonic ..." and "sscha <T> K iteration <n>", and a job nothing renamed has the
#: name of its function (``harmonic_job``, ``sscha_iteration_job``).
STAGES = ("harmonic", "sscha")


def _stage(job: Job) -> str:
    """Stage of ``job`` in its failure document: one of :data:`STAGES`, else its name."""
    name = job.name or "job"
    return next((stage for stage in STAGES if name.startswith(stage)), name)


def _failure_doc(job: Job, error: BaseException) -> Any:
    """The :class:`~tdphonon.schemas.JobFailureDoc` of ``job``, which raised ``error``."""
    from pymatgen.core import Structure

    from tdphonon import __version__
    from tdphonon.schemas import JobFailureDoc

    kwargs = job.function_kwargs or {}
    stage, temperature, iteration = _stage(job), None, None  # e.g. 'relax'
    if stage == "sscha":
        iteration = job.index  # each SSCHA iteration replaces the previous
        if isinstance(kwargs.get("temperature"), (int, float)):
            temperature = float(kwargs["temperature"])
    formula = (job.metadata or {}).get("formula")
    if formula is None:  # the structure argument (or its holder), once resolved
        arguments = [*job.function_args, *kwargs.values()]
        arguments += [getattr(a, "structure", None) for a in arguments if not isinstance(a, dict)]
        structures = [a for a in arguments if isinstance(a, Structure)]
        formula = structures[0].composition.reduced_formula if structures else None
    potential = kwargs.get("potential")  # a PotentialSpec
    model = kwargs.get("model") if potential is None else getattr(potential, "model", None)
    return JobFailureDoc(
        stage=stage,
        temperature=temperature,
        iteration=iteration,
        error_type=type(error).__name__,
        reason=(" ".join(str(error).split()) or type(error).__name__)[:2000],
        formula=formula,
        provenance={
            "model": model if isinstance(model, str) else None,
            "tdphonon_version": __version__,
        },
    )


def _store_failure(store: JobStore, job: Job, doc: Any) -> None:
    """Write ``doc`` as the output of ``job`` (same uuid, index, metadata and hosts).

    The hosts and metadata group it with the rest of its flow or material in
    :class:`tdphonon.query.CampaignResults`; a rerun that succeeds overwrites it.
    """
    from datetime import datetime

    from jobflow.core.schemas import JobStoreDocument
    from monty.json import jsanitize

    try:
        store.update(
            JobStoreDocument(
                uuid=job.uuid,
                index=job.index,
                output=jsanitize(doc, strict=True, enum_values=True, allow_bson=True),
                completed_at=datetime.now().isoformat(),
                metadata=job.metadata,
                hosts=job.hosts,
                name=job.name,
            ),
            key=["uuid", "index"],
            save={},
        )
    except Exception as error:  # e.g. the database is gone too: the run still reports
        logger.warning("could not store the failure of job '%s': %s", job.name, error)


def _watch(
    job: Job,
    store: JobStore,
    failures: list[tuple[Any, BaseException | None]],
    watched: list[Job],
) -> None:
    """Make ``job``, and the jobs it creates, record their failures in ``failures``.

    jobflow's ``run_locally`` catches the exception of a job that raises, logs it and
    stores nothing for that job. An instance attribute ``run`` (removed again by
    :func:`run_flow`) wraps :meth:`jobflow.Job.run`: a job that raises gets a
    :class:`~tdphonon.schemas.JobFailureDoc` as its output in ``store`` before the
    exception goes on to jobflow; a job whose output is already a ``JobFailureDoc`` (a
    failure of the material, see :data:`tdphonon.jobs.sscha.MATERIAL_FAILURES`) is noted.
    Each failure is noted as ``(JobFailureDoc, exception or None)``.
    """
    from tdphonon.schemas import JobFailureDoc

    run = job.run

    def run_and_record(*args: Any, **kwargs: Any) -> Response:
        try:
            response = run(*args, **kwargs)
        except BaseException as error:  # KeyboardInterrupt too: the run stopped there
            doc = _failure_doc(job, error)
            _store_failure(store, job, doc)
            failures.append((doc, error))
            logger.info("job '%s' failed: %s: %s", job.name, doc.error_type, doc.reason)
            logger.debug("traceback of job '%s'", job.name, exc_info=True)
            raise
        if isinstance(response.output, JobFailureDoc):
            failures.append((response.output, None))
        for created in (response.replace, response.detour, response.addition):
            if created is not None:
                for new in _jobs_of(created):
                    _watch(new, store, failures, watched)
        return response

    job.run = run_and_record
    watched.append(job)


def _last_output_classes(store: JobStore, uuids: list[str]) -> dict[str, tuple[Any, Any]]:
    """uuid -> (``@class``, ``stage``) of the last stored output of each job that has one.

    Read from the documents alone (no arrays loaded), in the order of ``uuids``.
    """
    latest: dict[str, dict[str, Any]] = {}
    properties = ["uuid", "index", "output.@class", "output.stage"]
    for doc in store.query({"uuid": {"$in": uuids}}, properties=properties):
        previous = latest.get(doc["uuid"])
        if previous is None or doc["index"] > previous["index"]:
            latest[doc["uuid"]] = doc
    classes = {}
    for uuid in uuids:
        output = latest.get(uuid, {}).get("output")
        if isinstance(output, dict):
            classes[uuid] = (output.get("@class"), output.get("stage"))
    return classes


class _NoJobflowTraceback(logging.Filter):
    """Drops jobflow's traceback of a failed job: :func:`run_flow` reports it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for ``run_locally``'s ``<job> failed with exception: <traceback>``."""
        return "failed with exception" not in record.getMessage()


def run_flow(
    flow: Flow, store: JobStore | None = None, ensure_success: bool = True
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Run a tdphonon flow here and return its harmonic and per-temperature results.

    A job that raises gets a :class:`~tdphonon.schemas.JobFailureDoc` (error type and
    one-line reason) as its output in the store, with the job's uuid, index, metadata and
    hosts, so that :meth:`tdphonon.query.CampaignResults.materials` reports its material
    or flow as ``failed`` with the reason (jobflow's ``run_locally`` alone stores nothing
    for it). Jobs that do not depend on it still run.

    Parameters
    ----------
    flow : Flow
        E.g. from :meth:`tdphonon.flows.SSCHAMaker.make`.
    store : JobStore, optional
        Where outputs go (default: :func:`get_store` ``(None)``).
    ensure_success : bool
        Raise :class:`JobFailedError` if any job failed: raised an exception, or stored
        a :class:`~tdphonon.schemas.JobFailureDoc` (a failure of the material).

    Returns
    -------
    harmonic : dict or None
        Fields of the :class:`~tdphonon.schemas.HarmonicPhononDoc` (objects, arrays
        loaded), or of the harmonic stage's :class:`~tdphonon.schemas.JobFailureDoc`; None
        if the flow has no harmonic job or it did not run.
    results : list of dict
        Fields of each :class:`~tdphonon.schemas.SSCHATemperatureDoc` that finished, in
        the order of the temperatures (found anywhere in the flow, e.g. inside
        :class:`~tdphonon.flows.conductivity.SSCHAConductivityMaker`'s).

    Raises
    ------
    JobFailedError
        With ``ensure_success``, a job failed (one-line message: material, stage, error
        type and reason; the original exception is its ``__cause__``).
    """
    from tdphonon.library_warnings import ignore_library_warnings
    from tdphonon.schemas import HarmonicPhononDoc, JobFailureDoc, SSCHATemperatureDoc

    store = check_store(store if store is not None else get_store(None))
    # in dependency order (each temperature's chain starts from the previous one), taken
    # before the run: running resolves the references that connect the jobs
    uuids = [job.uuid for job, _ in flow.iterflow()]
    failures: list[tuple[Any, BaseException | None]] = []
    watched: list[Job] = []
    for job in _jobs_of(flow):
        _watch(job, store, failures, watched)
    jobflow_logger = logging.getLogger("jobflow.managers.local")
    no_traceback = _NoJobflowTraceback()  # the traceback is logged at DEBUG by _watch
    jobflow_logger.addFilter(no_traceback)
    try:
        with warnings.catch_warnings():
            ignore_library_warnings()
            run_locally(flow, store=store, create_folders=False, ensure_success=False, log=False)
    finally:
        jobflow_logger.removeFilter(no_traceback)
        for job in watched:
            job.__dict__.pop("run", None)
    if ensure_success and failures:
        cause = next((error for _, error in failures if error is not None), None)
        raise JobFailedError([doc for doc, _ in failures]) from cause
    # the results are told by their documents' classes; the last output of a chain of
    # SSCHA iterations (one uuid) is the temperature's final document
    harmonic, results = None, []
    for uuid, (cls, stage) in _last_output_classes(store, uuids).items():
        if cls == SSCHATemperatureDoc.__name__:
            results.append(dict(load_output(store, uuid)))
        elif cls == HarmonicPhononDoc.__name__ or (
            cls == JobFailureDoc.__name__ and stage == "harmonic"
        ):
            harmonic = dict(load_output(store, uuid))
    return harmonic, results
