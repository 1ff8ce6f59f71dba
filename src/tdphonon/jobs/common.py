"""Helpers shared by tdphonon's jobs and flows.

The potential of a job is a :class:`~tdphonon.potentials.PotentialSpec`;
:func:`get_force_calculator` and :func:`ase_calculator` are short forms of it, kept for
existing callers (``ase_calculator`` here is the ``calculator_meta`` of relaxation jobs
made before it moved to :mod:`tdphonon.potentials`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tdphonon.potentials import PotentialSpec, ase_calculator

if TYPE_CHECKING:
    from tdphonon.potentials import ForceCalculator

__all__ = ["ase_calculator", "field_value", "get_force_calculator"]


def get_force_calculator(
    model: Any = None, device: str = "auto", batch_size: int = 16, store: Any = None
) -> ForceCalculator:
    """``PotentialSpec(model, device, batch_size).calculator(store)``, cached per process.

    See :class:`~tdphonon.potentials.PotentialSpec` for the models accepted (folders, hub
    names, ``"emt"``, stored fine-tuned models).
    """
    return PotentialSpec(model, device, batch_size).calculator(store)


def field_value(doc: Any, name: str) -> Any:
    """A field of a document given as a dict or as an object."""
    return doc.get(name) if isinstance(doc, dict) else getattr(doc, name, None)
