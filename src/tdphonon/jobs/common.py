"""Helpers shared by tdphonon's jobs: cached force calculators and progress switches."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator
    from pymatgen.core import Structure

    from tdphonon.potentials import ForceCalculator

__all__ = [
    "ase_calculator",
    "check_potential",
    "field_value",
    "get_force_calculator",
    "progress_enabled",
    "resolve_model",
]


# -- potentials ---------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _cached_calculator(model: str | None, device: str, batch_size: int) -> ForceCalculator:
    from tdphonon.potentials import get_calculator

    return get_calculator(model, device=device, batch_size=batch_size)


def get_force_calculator(
    model: Any = None, device: str = "auto", batch_size: int = 16, store: Any = None
) -> ForceCalculator:
    """The :class:`~tdphonon.potentials.ForceCalculator` of a model, cached per process.

    Parameters
    ----------
    model : str, os.PathLike, StoredModel, dict or None
        matgl model folder or hub name, or ``"emt"``; None: the default model. A
        fine-tuned model stored in a JobStore (:class:`~tdphonon.schemas.StoredModel`, its
        dict, or its ``tdphonon-model://<uuid>/<sha256>`` URI) is fetched into the local
        model cache first (:func:`tdphonon.jobs.finetune.fetch_stored_model`).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    batch_size : int
        Supercells per model call.
    store : jobflow.JobStore, optional
        Store to fetch a stored model from (default: the running job's store, then jobflow's
        configured one).
    """
    if model is not None and not isinstance(model, os.PathLike):
        from tdphonon.jobs.finetune import as_stored_model, fetch_stored_model

        reference = as_stored_model(model)
        if reference is not None:
            model = fetch_stored_model(reference, store)
    return _cached_calculator(None if model is None else str(model), device, int(batch_size))


def resolve_model(model: Any) -> Any:
    """A model as jobs should receive it, resolved where the flow is made.

    ``None`` becomes :func:`~tdphonon.potentials.default_model` (``$TDPHONON_MODEL``, else
    the pretrained M3GNet by its hub name); an existing model folder becomes an absolute path
    (workers may run elsewhere); a stored fine-tuned model (``StoredModel``, its dict or
    URI) becomes its ``tdphonon-model://`` URI; an ``OutputReference`` (a model that an
    earlier job makes) and anything else (a hub name, ``"emt"``) pass unchanged.
    """
    from jobflow import OutputReference

    if isinstance(model, OutputReference):
        return model
    from tdphonon.jobs.finetune import as_stored_model

    stored = as_stored_model(model) if model is not None else None
    if stored is not None:
        return stored.uri
    if model is None:
        from tdphonon.potentials import default_model

        model = default_model()
    text = str(model).strip() or None
    if text is not None and text.lower() != "emt" and Path(text).expanduser().exists():
        return str(Path(text).expanduser().resolve())
    return text


def check_potential(
    model: Any, structure: Structure | None, device: str = "auto", batch_size: int = 16
) -> Any:
    """:func:`resolve_model`, then check that the model loads and knows the elements.

    An ``OutputReference`` cannot be checked before it exists and is returned unchecked.
    The check runs on the CPU (the machine making the flow may have no GPU).
    """
    from jobflow import OutputReference

    model = resolve_model(model)
    if not isinstance(model, OutputReference):
        calculator = get_force_calculator(model, device if device == "auto" else "cpu", batch_size)
        if structure is not None:
            calculator.check_elements(structure.symbol_set)
    return model


def ase_calculator(
    model: str | None = None, device: str = "auto", batch_size: int = 16
) -> Calculator:
    """ASE calculator of tdphonon's potential (correct matgl convention), for atomate2.

    Used by :func:`tdphonon.jobs.sscha.relax_job` as ``calculator_meta`` of atomate2's force-field makers:
    ``{"@module": "tdphonon.jobs.common", "@callable": "ase_calculator"}``.
    """
    return get_force_calculator(model, device, batch_size).as_ase_calculator()


def progress_enabled() -> bool:
    """Whether jobs show progress bars (``TDPHONON_PROGRESS`` set and not 0)."""
    return os.environ.get("TDPHONON_PROGRESS", "") not in ("", "0")


def field_value(doc: Any, name: str) -> Any:
    """A field of a document given as a dict or as an object."""
    return doc.get(name) if isinstance(doc, dict) else getattr(doc, name, None)
