"""The fine-tuning job and the stored-model artifact it produces.

:func:`finetune_job` fine-tunes a pretrained potential (:func:`tdphonon.finetune.finetune`)
and returns a :class:`~tdphonon.schemas.FineTuneDoc` whose ``model_archive`` (the saved model
folder as a base64 tar.gz, about 1-2 MB for M3GNet) goes to the JobStore's ``"data"`` store
(GridFS with MongoDB), and whose ``model`` field is a :class:`~tdphonon.schemas.StoredModel`
reference. Any job on any worker turns the reference into a model folder with
:func:`~tdphonon.potentials.fetch_stored_model` (:mod:`tdphonon.potentials.stored`, through
:meth:`tdphonon.potentials.PotentialSpec.calculator`): local cache first (``$TDPHONON_MODEL_CACHE/<sha256>``, default
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
import socket
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from jobflow import JobConfig, job

from tdphonon.potentials import PotentialSpec
from tdphonon.potentials.stored import (
    MODEL_CACHE_ENV_VAR,
    as_stored_model,
    fetch_stored_model,
    model_archive,
    model_cache_dir,
    unpack_model_archive,
)
from tdphonon.schemas import FineTuneDoc, StoredModel

__all__ = [
    "MODEL_CACHE_ENV_VAR",
    "as_stored_model",
    "fetch_stored_model",
    "finetune_job",
    "model_archive",
]

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
    base_model: PotentialSpec | str | None = None,
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
    base_model : PotentialSpec or str, optional
        Pretrained matgl model (folder or hub name, or a stored fine-tuned model) as the
        ``model`` of a :class:`~tdphonon.potentials.PotentialSpec` (its device and batch size
        are not used: training has its own in ``settings``); None:
        :func:`~tdphonon.potentials.default_model` on the worker.
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
    if not isinstance(base_model, PotentialSpec):
        base_model = PotentialSpec(base_model or None)
    base = base_model.locate(store)
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
            base,
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
    unpack_model_archive(archive, sha256, model_cache_dir() / sha256)  # this worker needs no fetch
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
