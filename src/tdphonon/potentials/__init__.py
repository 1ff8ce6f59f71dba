"""Interatomic potentials: energies and forces of many structures through one interface.

The rest of tdphonon computes forces only through a :class:`ForceCalculator`
(:mod:`~tdphonon.potentials.base`; the science core needs only the :class:`ForceEvaluator`
protocol):

* :class:`MatglCalculator` (:mod:`~tdphonon.potentials.matgl_models`) evaluates a matgl
  ``Potential`` (M3GNet, TensorNet, ...) on batches of structures, one model call per batch;
  :func:`load_potential` loads a matgl model **with the correct message-passing
  convention** (pre-matgl-3 weights such as ``M3GNet-MP-2021.2.8-PES`` are silently wrong
  under matgl >= 3 otherwise, see :mod:`tdphonon.potentials._matgl_legacy`) and
  :func:`save_potential` saves one so that it reloads right.
* :class:`AseCalculator` (:mod:`~tdphonon.potentials.ase_calculators`) wraps any ASE
  calculator (one call per structure), e.g. EMT for fast tests.

:func:`get_calculator` (:mod:`~tdphonon.potentials.factory`) builds either from a model
name or folder; :func:`default_model` is the one place the environment
(``TDPHONON_MODEL``) names the model. Workflows pass a :class:`PotentialSpec`
(:mod:`~tdphonon.potentials.spec`: model, device, batch size; resolved once where the flow
is made, turned into a cached calculator on the worker), and fine-tuned models stored in a
JobStore are fetched by :mod:`~tdphonon.potentials.stored`.

The matgl names are imported on first use (torch and matgl take seconds to import).
"""

from __future__ import annotations

from typing import Any

from tdphonon.potentials.ase_calculators import AseCalculator
from tdphonon.potentials.base import (
    ForceCalculator,
    ForceEvaluator,
    LegacyConventionWarning,
    ModelLoadError,
    NonFiniteForcesError,
    UnsupportedElementError,
)
from tdphonon.potentials.factory import (
    DEFAULT_MODEL,
    MODEL_ENV_VAR,
    cached_calculator,
    default_model,
    get_calculator,
)
from tdphonon.potentials.spec import PotentialSpec, ase_calculator
from tdphonon.potentials.stored import (
    MODEL_CACHE_ENV_VAR,
    as_stored_model,
    fetch_stored_model,
    model_cache_dir,
)

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_CACHE_ENV_VAR",
    "MODEL_ENV_VAR",
    "AseCalculator",
    "ForceCalculator",
    "ForceEvaluator",
    "LegacyConventionWarning",
    "MatglCalculator",
    "ModelLoadError",
    "NonFiniteForcesError",
    "PotentialSpec",
    "UnsupportedElementError",
    "as_stored_model",
    "ase_calculator",
    "cached_calculator",
    "default_model",
    "fetch_stored_model",
    "get_calculator",
    "load_potential",
    "message_convention",
    "model_cache_dir",
    "save_potential",
]

#: Names of :mod:`tdphonon.potentials.matgl_models`, imported on first access.
_MATGL_NAMES = frozenset(
    {"MatglCalculator", "load_potential", "message_convention", "save_potential"}
)


def __getattr__(name: str) -> Any:
    if name in _MATGL_NAMES:
        from tdphonon.potentials import matgl_models

        return getattr(matgl_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _MATGL_NAMES)
