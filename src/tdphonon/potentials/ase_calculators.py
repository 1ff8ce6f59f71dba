"""ASE calculators (EMT, or any other) as :class:`~tdphonon.potentials.base.ForceCalculator`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from tdphonon.potentials.base import ForceCalculator

__all__ = ["AseCalculator"]


def _emt_elements() -> frozenset[str]:
    from ase.calculators.emt import parameters

    return frozenset(parameters)


class AseCalculator(ForceCalculator):
    """Wrap any ASE calculator; one calculator call per structure.

    Parameters
    ----------
    calc : ase.calculators.calculator.Calculator
        The calculator. It is attached to a copy of each structure, so the caller's
        structures are not modified.
    name : str, optional
        Name; defaults to the lower-case class name (``"emt"``).
    supported_elements : Iterable[str], optional
        Elements the calculator supports, checked before any work. Defaults to the EMT
        parameter set for :class:`ase.calculators.emt.EMT` and to no check otherwise.

    Notes
    -----
    Forces are returned without applying constraints (``apply_constraint=False``), as needed
    for force constants.
    """

    def __init__(
        self,
        calc: Calculator,
        *,
        name: str | None = None,
        supported_elements: Iterable[str] | None = None,
    ) -> None:
        super().__init__(name or type(calc).__name__.lower(), batch_size=1)
        self.calc = calc
        if supported_elements is None:
            from ase.calculators.emt import EMT

            self._supported = _emt_elements() if isinstance(calc, EMT) else None
        else:
            self._supported = frozenset(supported_elements)

    @property
    def supported_elements(self) -> frozenset[str] | None:
        """Element symbols supported, or ``None`` if unknown."""
        return self._supported

    def _evaluate_batch(self, structures: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        energies = np.empty(len(structures))
        forces = []
        for i, atoms in enumerate(structures):
            work = atoms.copy()
            work.calc = self.calc
            energies[i] = work.get_potential_energy()
            forces.append(np.array(work.get_forces(apply_constraint=False), dtype=np.float64))
        return energies, forces

    def provenance(self) -> dict[str, Any]:
        """Describe the wrapped calculator (see :meth:`ForceCalculator.provenance`)."""
        import ase

        cls = type(self.calc)
        return {
            "name": self.name,
            "kind": "ase",
            "calculator": f"{cls.__module__}.{cls.__qualname__}",
            "path": None,
            "version": f"ase {ase.__version__}",
            "message_convention": None,
            "device": "cpu",
            "batch_size": self.batch_size,
            "parameters": _jsonable(getattr(self.calc, "parameters", {})),
        }

    def as_ase_calculator(self) -> Calculator:
        """Return the wrapped ASE calculator itself."""
        return self.calc


def _jsonable(obj: Any) -> Any:
    try:
        return json.loads(json.dumps(obj, default=str))
    except (TypeError, ValueError):
        return str(obj)
