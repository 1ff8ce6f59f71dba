"""The models tdphonon knows: shipped with the package, local folders, caches.

A **shipped** model is a matgl model folder inside the package
(``tdphonon/models/<name>/``: ``model.json``, ``model.pt``, ``state.pt``, the convention
sidecar and ``provenance.json``); it is loaded by its name (``--model
M3GNet-phonondb-PBEsol``) on any install, with no network. :func:`known_models` lists the
shipped models, the one ``$TDPHONON_MODEL`` names, the matgl models in matgl's cache and the
fine-tuned models fetched from a JobStore (:func:`tdphonon.potentials.model_cache_dir`),
each with its provenance (base model, training data, metrics) where the folder has one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MODEL_FILES", "SHIPPED_DIR", "ModelInfo", "known_models", "shipped_model_dir"]

#: Folder of the models shipped with the package.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models"

#: matgl's download cache (``matgl.config.MATGL_CACHE``, not imported: matgl is slow to import).
MATGL_CACHE = Path.home() / ".cache" / "matgl"

#: Files of a matgl model folder.
MODEL_FILES = ("model.json", "model.pt", "state.pt")


@dataclass
class ModelInfo:
    """A model tdphonon can load, and what is known of it.

    Attributes
    ----------
    name : str
        What ``--model`` accepts (a shipped or hub name, or the folder).
    origin : str
        ``"shipped"``, ``"$TDPHONON_MODEL"``, ``"matgl cache"`` or ``"fine-tuned (store)"``.
    path : str
        The model folder.
    provenance : dict
        ``provenance.json`` of the folder (fine-tuned models), else empty.
    """

    name: str
    origin: str
    path: str
    provenance: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: base model, training data and the recorded test metric, where known."""
        prov = self.provenance
        parts = []
        base = prov.get("base_model")
        if isinstance(base, dict):
            base = base.get("name") or base.get("model")
        if base:
            parts.append(f"fine-tuned from {base}")
        data = prov.get("training_data") or {}
        if data.get("n_compounds"):
            parts.append(f"on {data['n_compounds']} compounds of {data.get('source', '?')}")
        elif prov.get("train"):
            parts.append(f"on {len(prov['train'])} force sets")
        test = (prov.get("metrics") or {}).get("test") or {}
        if test.get("finetuned_mae_thz") is not None:
            parts.append(
                f"test phonon MAE {test['finetuned_mae_thz']:.3f} THz "
                f"(base {test['pretrained_mae_thz']:.3f}) on {test['n_compounds']} compounds"
            )
        return "; ".join(parts) or "no provenance recorded"


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in MODEL_FILES)


def _provenance(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "provenance.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def shipped_model_dir(name: str) -> Path | None:
    """The folder of the shipped model ``name``, or None if no such model is shipped."""
    if not name or "/" in name or os.sep in name or name.startswith("."):
        return None
    path = SHIPPED_DIR / name
    return path if _is_model_dir(path) else None


def known_models() -> list[ModelInfo]:
    """Every model tdphonon finds on this machine (see the module docstring)."""
    from tdphonon.potentials.factory import MODEL_ENV_VAR
    from tdphonon.potentials.stored import model_cache_dir

    models: list[ModelInfo] = []
    if SHIPPED_DIR.is_dir():
        for path in sorted(SHIPPED_DIR.iterdir()):
            if _is_model_dir(path):
                models.append(ModelInfo(path.name, "shipped", str(path), _provenance(path)))
    env = os.environ.get(MODEL_ENV_VAR, "").strip()
    if env:
        path = Path(env).expanduser()
        where = str(path.resolve()) if path.is_dir() else "(a name: shipped, cached or hub)"
        models.append(ModelInfo(env, f"${MODEL_ENV_VAR}", where, _provenance(path)))
    if MATGL_CACHE.is_dir():  # plain folders, or the hub's models--owner--name/snapshots/..
        for model_json in sorted(MATGL_CACHE.glob("**/model.json")):
            path = model_json.parent
            if _is_model_dir(path):
                hub = next((p.name for p in path.parents if p.name.startswith("models--")), None)
                name = hub.removeprefix("models--").replace("--", "/") if hub else path.name
                models.append(ModelInfo(name, "matgl cache", str(path), _provenance(path)))
    store_cache = model_cache_dir()
    if store_cache.is_dir():
        for path in sorted(store_cache.iterdir()):
            if _is_model_dir(path):
                models.append(
                    ModelInfo(str(path), "fine-tuned (store)", str(path), _provenance(path))
                )
    return models
