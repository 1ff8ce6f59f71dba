"""Helpers shared by tdphonon's jobs: cached force calculators and progress switches."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

    from tdphonon.potentials import ForceCalculator

__all__ = ["ase_calculator", "get_force_calculator", "progress_enabled"]


# -- potentials ---------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _cached_calculator(model: str | None, device: str, batch_size: int) -> ForceCalculator:
    from tdphonon.potentials import get_calculator

    return get_calculator(model, device=device, batch_size=batch_size)


def get_force_calculator(
    model: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 16
) -> ForceCalculator:
    """The :class:`~tdphonon.potentials.ForceCalculator` of a model, cached per process.

    Parameters
    ----------
    model : str, os.PathLike or None
        matgl model folder or hub name, or ``"emt"``; None reads ``TDPHONON_MODEL``.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    batch_size : int
        Supercells per model call.
    """
    return _cached_calculator(None if model is None else str(model), device, int(batch_size))


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
