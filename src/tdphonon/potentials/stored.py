"""Fine-tuned models stored in a JobStore: reference, archive, local cache and fetch.

A fine-tuning job (:func:`tdphonon.jobs.finetune.finetune_job`) stores the model folder as
a tar.gz archive in its output (the JobStore's ``"data"`` store) and hands on a
:class:`~tdphonon.schemas.StoredModel` reference. :func:`fetch_stored_model` turns the
reference (or its dict, or its ``tdphonon-model://<uuid>/<sha256>`` URI) into a local model
folder: the local cache first (``$TDPHONON_MODEL_CACHE/<sha256>``, default
``~/.tdphonon/models``), else the archive from a JobStore, hash verified.

jobflow is imported only when a model has to be fetched from jobflow's configured store.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tdphonon.potentials.base import ModelLoadError

if TYPE_CHECKING:
    from tdphonon.schemas import StoredModel

__all__ = [
    "MODEL_CACHE_ENV_VAR",
    "MODEL_URI_PREFIX",
    "as_stored_model",
    "fetch_stored_model",
    "model_archive",
    "model_cache_dir",
    "unpack_model_archive",
]

#: Environment variable naming the local cache of stored models.
MODEL_CACHE_ENV_VAR = "TDPHONON_MODEL_CACHE"
#: Scheme of the string form of a :class:`~tdphonon.schemas.StoredModel`.
MODEL_URI_PREFIX = "tdphonon-model://"


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
    if model is None or isinstance(model, os.PathLike):
        return None
    if isinstance(model, str) and not model.startswith(MODEL_URI_PREFIX):
        return None
    from tdphonon.schemas import StoredModel

    if isinstance(model, StoredModel):
        return model
    if isinstance(model, dict) and {"uuid", "sha256"} <= set(model):
        fields = {k: v for k, v in model.items() if not k.startswith("@")}
        fields.setdefault("name", fields["sha256"][:12])
        fields.setdefault("n_bytes", 0)
        return StoredModel(**fields)
    if isinstance(model, str) and model.startswith(MODEL_URI_PREFIX):
        parts = model[len(MODEL_URI_PREFIX) :].strip("/").split("/")
        if len(parts) != 2:
            raise ValueError(f"bad stored-model URI {model!r} (tdphonon-model://<uuid>/<sha256>)")
        return StoredModel(uuid=parts[0], sha256=parts[1], name=parts[1][:12], n_bytes=0)
    return None


def unpack_model_archive(data: bytes, sha256: str, target: Path) -> Path:
    """Unpack an archive of :func:`model_archive` into ``target`` after checking its hash.

    Safe when several processes unpack the same model at once (the first rename wins).
    """
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
            return unpack_model_archive(base64.b64decode(archive), ref.sha256, target)
        except RuntimeError as err:
            raise ModelLoadError(str(err)) from None
    raise ModelLoadError(
        f"stored model {ref.sha256[:12]} (job {ref.uuid}) is not in the local cache "
        f"{model_cache_dir()} and could not be fetched from a JobStore"
        + (f" ({'; '.join(errors)})" if errors else " (no store available)")
    )
