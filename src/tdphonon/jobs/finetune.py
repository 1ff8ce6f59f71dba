"""The fine-tuning job and the stored-model artifact it produces.

:func:`finetune_job` fine-tunes a pretrained potential (:func:`tdphonon.finetune.finetune`)
and returns a :class:`~tdphonon.schemas.FineTuneDoc` whose ``model_archive`` (the saved model
folder as a base64 tar.gz, about 1-2 MB for M3GNet) goes to the JobStore's ``"data"`` store
(GridFS with MongoDB), and whose ``model`` field is a :class:`~tdphonon.schemas.StoredModel`
reference. Any job on any worker turns the reference into a model folder with
:func:`fetch_stored_model`: local cache first (``$TDPHONON_MODEL_CACHE/<sha256>``, default
``~/.tdphonon/models``), else the archive from the store (the running job's store, or
jobflow's configured ``JOB_STORE``), hash verified.

Interrupted training is not lost: after every epoch the training checkpoint is written to the
same data store (key ``tdphonon_finetune_checkpoint`` = the job's uuid), so that a rerun of
the job (``lpad rerun_fws``, ``detect_lostruns --rerun``), on any worker, resumes after the
last finished epoch; the checkpoint is removed once the job has finished.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from jobflow import JobConfig, job

from tdphonon.schemas import FineTuneDoc, StoredModel

__all__ = [
    "MODEL_CACHE_ENV_VAR",
    "as_stored_model",
    "fetch_stored_model",
    "finetune_job",
    "model_archive",
]

#: Environment variable naming the local cache of stored models.
MODEL_CACHE_ENV_VAR = "TDPHONON_MODEL_CACHE"
_URI_PREFIX = "tdphonon-model://"


def model_cache_dir() -> Path:
    """``$TDPHONON_MODEL_CACHE`` or ``~/.tdphonon/models``."""
    path = os.environ.get(MODEL_CACHE_ENV_VAR, "").strip()
    return Path(path).expanduser() if path else Path.home() / ".tdphonon" / "models"


def model_archive(folder: str | os.PathLike) -> tuple[bytes, str]:
    """Pack a model folder into a reproducible tar.gz; return ``(bytes, sha256 hex)``."""
    folder = Path(folder)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.iterdir()):
            if path.is_file():
                info = tar.gettarinfo(str(path), arcname=path.name)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def as_stored_model(model: Any) -> StoredModel | None:
    """A :class:`StoredModel` from a StoredModel, its dict, or a ``tdphonon-model://`` URI.

    Returns None for anything else (model names, folders, calculators).
    """
    if isinstance(model, StoredModel):
        return model
    if isinstance(model, dict) and {"uuid", "sha256"} <= set(model):
        fields = {k: v for k, v in model.items() if not k.startswith("@")}
        fields.setdefault("name", fields["sha256"][:12])
        fields.setdefault("n_bytes", 0)
        return StoredModel(**fields)
    if isinstance(model, str) and model.startswith(_URI_PREFIX):
        parts = model[len(_URI_PREFIX) :].strip("/").split("/")
        if len(parts) != 2:
            raise ValueError(f"bad stored-model URI {model!r} (tdphonon-model://<uuid>/<sha256>)")
        return StoredModel(uuid=parts[0], sha256=parts[1], name=parts[1][:12], n_bytes=0)
    return None


def _unpack(data: bytes, sha256: str, target: Path) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"stored model archive is corrupt: sha256 {digest} instead of {sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(tmp, filter="data")
    (tmp / ".sha256").write_text(sha256)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch_stored_model(model: Any, store: Any = None) -> Path:
    """Local folder of a stored fine-tuned model (fetched from the JobStore if needed).

    Parameters
    ----------
    model : StoredModel, dict or str
        The reference (``FineTuneDoc.model``), its dict, or its ``tdphonon-model://`` URI.
    store : jobflow.JobStore, optional
        Where to fetch from. Default: the running job's store (``jobflow.CURRENT_JOB``, jobs
        with ``expose_store``), else jobflow's configured ``JOB_STORE``.

    Returns
    -------
    Path
        ``<cache>/<sha256>``, a matgl model folder for :func:`tdphonon.potentials.load_potential`.

    Raises
    ------
    ModelLoadError
        If the model is neither cached nor in the store, or the archive's hash differs.
    """
    from tdphonon.potentials import ModelLoadError

    ref = as_stored_model(model)
    if ref is None:
        raise ModelLoadError(f"not a stored-model reference: {model!r}")
    target = model_cache_dir() / ref.sha256
    marker = target / ".sha256"
    if marker.is_file() and marker.read_text().strip() == ref.sha256:
        return target
    stores = [store]
    if store is None:
        from jobflow import CURRENT_JOB

        stores = [getattr(CURRENT_JOB, "store", None)]
        try:
            from jobflow import SETTINGS

            stores.append(SETTINGS.JOB_STORE)
        except Exception:
            pass
    errors = []
    for candidate in stores:
        if candidate is None:
            continue
        try:
            candidate.connect()
            doc = candidate.get_output(ref.uuid, load=True)
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
            continue
        archive = doc.get("model_archive") if isinstance(doc, dict) else None
        if not isinstance(archive, str):
            errors.append(f"job {ref.uuid} output has no model_archive")
            continue
        try:
            return _unpack(base64.b64decode(archive), ref.sha256, target)
        except RuntimeError as err:
            raise ModelLoadError(str(err)) from None
    raise ModelLoadError(
        f"stored model {ref.sha256[:12]} (job {ref.uuid}) is not in the local cache "
        f"{model_cache_dir()} and could not be fetched from a JobStore"
        + (f" ({'; '.join(errors)})" if errors else " (no store available)")
    )


_CHECKPOINT_KEY = "tdphonon_finetune_checkpoint"


def _checkpoint_store(job_store: Any) -> Any:
    """The JobStore's ``data`` store (GridFS with MongoDB), else its docs store."""
    return job_store.additional_stores.get("data", job_store.docs_store)


def restore_checkpoint(job_store: Any, uuid: str, folder: Path) -> bool:
    """Write the stored training checkpoint of job ``uuid`` into ``folder``; False if none."""
    from tdphonon.finetune import CHECKPOINT_FILE

    doc = _checkpoint_store(job_store).query_one({_CHECKPOINT_KEY: uuid})
    if not doc:
        return False
    data = base64.b64decode(doc["checkpoint"])
    if hashlib.sha256(data).hexdigest() != doc["sha256"]:
        return False  # a corrupt copy is not resumed from: training starts afresh
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CHECKPOINT_FILE).write_bytes(data)
    return True


def save_checkpoint(job_store: Any, uuid: str, path: Path) -> None:
    """Store (replace) the training checkpoint of job ``uuid``."""
    data = path.read_bytes()
    doc = {
        _CHECKPOINT_KEY: uuid,
        "checkpoint": base64.b64encode(data).decode("ascii"),
        "sha256": hashlib.sha256(data).hexdigest(),
        "n_bytes": len(data),
    }
    _checkpoint_store(job_store).update(doc, key=_CHECKPOINT_KEY)


def _resolve_data(data: Sequence[Any], store: Any) -> list:
    """Force sets from paths, or from the store for items ``{"jobstore": {query...}}``."""
    from tdphonon.forcesets import read_force_sets
    from tdphonon.query import read_jobstore

    sets, paths = [], []
    for item in data:
        if isinstance(item, dict) and "jobstore" in item:
            if store is None:
                raise ValueError("a JobStore query needs a store (run with expose_store)")
            sets.extend(read_jobstore(store, **dict(item["jobstore"])))
        else:
            paths.append(item)
    if paths:
        sets = read_force_sets(paths) + sets
    return sets


@job(data=["model_archive"], output_schema=FineTuneDoc, config=JobConfig(expose_store=True))
def finetune_job(
    data: Sequence[Any],
    base_model: str | None = None,
    validation: Sequence[str] | None = None,
    validation_fraction: float = 0.2,
    settings: dict[str, Any] | None = None,
    name: str = "finetuned",
) -> FineTuneDoc:
    """Fine-tune a pretrained potential on DFT force sets; store the model in the JobStore.

    Parameters
    ----------
    data : sequence
        Force-set files or folders (readable on the worker), or ``{"jobstore": {...}}``
        items: keyword arguments of :func:`tdphonon.query.read_jobstore` (``formula``,
        ``flow_uuid``, ``query``) applied to this job's own store (atomate2 DFT phonon
        outputs already in the database).
    base_model : str, optional
        Pretrained matgl model (folder or hub name); None: :func:`~tdphonon.potentials.default_model`.
    validation : sequence of str, optional
        Validation compound names; otherwise a seeded split by compound.
    validation_fraction : float
        Fraction of compounds for validation when ``validation`` is None (0: none).
    settings : dict, optional
        Keyword arguments of :class:`tdphonon.finetune.FineTuneSettings`.
    name : str
        Model name.

    Returns
    -------
    FineTuneDoc
    """
    from jobflow import CURRENT_JOB

    from tdphonon import __version__
    from tdphonon.finetune import FineTuneSettings, finetune
    from tdphonon.forcesets import split_by_compound

    store = getattr(CURRENT_JOB, "store", None)
    settings_obj = FineTuneSettings(**(settings or {}))
    if not base_model:
        from tdphonon.potentials import default_model

        base_model = default_model()
    sets = _resolve_data(list(data), store)
    if validation is None and validation_fraction > 0 and len(sets) > 1:
        train, val = split_by_compound(sets, fraction=validation_fraction, seed=settings_obj.seed)
    elif validation:
        train, val = split_by_compound(sets, list(validation))
    else:
        train, val = sets, []
    uuid = CURRENT_JOB.job.uuid if CURRENT_JOB.job is not None else "local"
    with tempfile.TemporaryDirectory() as tmp:
        folder, checkpoints = Path(tmp) / name, Path(tmp) / "checkpoint"
        if store is not None:
            restore_checkpoint(store, uuid, checkpoints)
        result = finetune(
            base_model,
            train,
            val,
            settings_obj,
            out_dir=folder,
            checkpoint_dir=checkpoints,
            on_checkpoint=None if store is None else partial(save_checkpoint, store, uuid),
        )
        archive, sha256 = model_archive(folder)
    if store is not None:
        _checkpoint_store(store).remove_docs({_CHECKPOINT_KEY: uuid})
    ref = StoredModel(
        uuid=uuid,
        sha256=sha256,
        name=name,
        n_bytes=len(archive),
        base_model=result.provenance["base_model"].get("name"),
    )
    _unpack(archive, sha256, model_cache_dir() / sha256)  # this worker needs no fetch
    before, after = result.before, result.after
    return FineTuneDoc(
        model=ref,
        model_archive=base64.b64encode(archive).decode("ascii"),
        base_model=result.provenance["base_model"],
        data=result.provenance["train"],
        validation=result.provenance["validation"],
        settings=result.provenance["settings"],
        validation_before=before.as_dict() if before else None,
        validation_after=after.as_dict() if after else None,
        frequency_mae_ratio=(
            before.frequency_mae_thz / after.frequency_mae_thz if before and after else None
        ),
        forgetting=result.forgetting,
        history=result.history,
        best_epoch=result.best_epoch,
        training_time_s=result.training_time_s,
        provenance={"tdphonon_version": __version__, "host": socket.gethostname()},
    )
