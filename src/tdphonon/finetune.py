"""Fine-tune a pretrained matgl potential on DFT phonon force sets (matgl + lightning).

The potential is loaded with :func:`tdphonon.potentials.load_potential` (legacy message
convention restored), trained with a :class:`matgl.utils.training.PotentialLightningModule`
whose loss masks absent labels (force-only phonon sets have no energies; a batch without any
energy or stress label contributes no energy / stress loss, instead of NaN), and saved with
:func:`tdphonon.potentials.save_potential`, so that ``matgl.load_model`` and tdphonon load it
in the right convention. The pretrained ``data_mean``, ``data_std`` and element reference
energies are kept (they are buffers of the loaded potential and are not trained).

Model selection is on a *phonon* metric: after every ``validate_every`` epochs the frequency
MAE on the validation compounds (:mod:`tdphonon.evaluation`, compounds never seen in
training) is computed; the best epoch is kept and training stops after ``patience``
validations without improvement. A forgetting guard compares the energies and forces of the
fine-tuned and the pretrained model on structures outside the training set.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tdphonon.evaluation import EvaluationResult, evaluate
from tdphonon.forcesets import ForceSet, ForceSetError

if TYPE_CHECKING:
    from ase import Atoms
    from matgl.apps.pes import Potential

logger = logging.getLogger(__name__)

__all__ = [
    "FineTuneResult",
    "FineTuneSettings",
    "GraphCache",
    "build_samples",
    "default_graph_cache",
    "finetune",
    "forgetting_guard",
]

#: Version of the training samples (labels, weights) in the graph cache's key.
_SAMPLES_VERSION = 2

#: File name of the training checkpoint in ``checkpoint_dir``.
CHECKPOINT_FILE = "last.ckpt"

#: Key of the fine-tuning state (history, best weights, input fingerprint) in a checkpoint.
_CALLBACK_KEY = "tdphonon_phonon_validation"

#: eV/Å³ -> GPa
EV_PER_A3_TO_GPA = 160.21766208


@dataclass
class FineTuneSettings:
    """Settings of a fine-tuning run.

    Parameters
    ----------
    energy_weight, force_weight, stress_weight : float
        Loss weights (energies per atom in eV, forces in eV/Å, stresses in GPa). Structures
        without an energy or stress label never enter those terms. Energies enter as
        differences between the supercells of one compound (each batch holds one compound):
        a constant offset between the DFT setup and the model's reference energies is no
        error for phonons, and fitting it would distort the model.
    loss : {"mse", "huber", "l1"}
        Loss function.
    lr : float
        Peak learning rate (Adam).
    lr_min_ratio : float
        Cosine decay of the learning rate over ``max_epochs`` down to ``lr * lr_min_ratio``.
    max_epochs : int
        Maximum number of epochs.
    batch_size : int
        Supercells per optimisation step.
    validate_every : int
        Phonon validation every this many epochs (and before training).
    patience : int
        Early stopping after this many phonon validations without improvement.
    trainable : str or list of str
        ``"last-block"`` (default: the last graph-convolution block, its three-body
        interaction and the readout; the configuration chosen by the fine-tuning benchmark);
        ``"all"``; ``"readout"`` (only ``model.final_layer``); ``"interactions"`` (graph
        layers, three-body interactions and readout; embeddings frozen); or a list of
        parameter-name prefixes to train.
    seed : int
        Seed for the shuffling and the initialisation of anything random (deterministic on
        CPU).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    max_grad_norm : float or None
        Gradient clipping.
    force_constant_weighting : bool
        Weight the loss of each supercell so that it measures errors of the force constants
        rather than of the raw forces (:func:`tdphonon.forcesets.supercell_weight`): a
        finite-displacement supercell (one or two atoms moved) by ``(0.01 Å / u_max)²``,
        u_max its largest displacement (force errors per unit displacement); a
        random-displacement or thermal snapshot (many atoms moved) by
        ``min(1, (0.05 eV/Å / F_rms)²)``, F_rms its RMS DFT force (relative force errors).
        Then 0.01 Å finite-displacement sets are not drowned by large-displacement sets, and
        far-from-equilibrium snapshots (random displacements of 1 Å, forces of tens of
        eV/Å) do not drown the near-equilibrium ones that set the phonons. False: every
        supercell weighs 1.
    subtract_reference : bool
        Train on forces relative to the undisplaced supercell (predicted forces minus the
        model's forces on the undisplaced supercell, DFT forces minus the DFT residual forces
        when the set has them): exactly what the force constants are built from, so the
        model's residual forces at the DFT geometry (a lattice-constant mismatch) do not
        dominate the loss. False: plain forces.
    max_displacements : int or None
        Train on at most this many displaced supercells per compound, chosen by
        :meth:`tdphonon.forcesets.ForceSet.training_subset` (round-robin over the
        symmetry-distinct displaced atoms); None: all. At database scale the number of
        distinct compounds matters more than displacements per compound (see
        docs/finetuning.md), so 2-4 buys many more compounds per hour of training.
    """

    energy_weight: float = 1.0
    force_weight: float = 1.0
    stress_weight: float = 0.0
    loss: str = "mse"
    lr: float = 3e-4
    lr_min_ratio: float = 0.1
    max_epochs: int = 10
    batch_size: int = 4
    validate_every: int = 1
    patience: int = 3
    trainable: str | list[str] = "last-block"
    seed: int = 0
    device: str = "cpu"
    max_grad_norm: float | None = 10.0
    force_constant_weighting: bool = True
    subtract_reference: bool = True
    max_displacements: int | None = None

    def __post_init__(self) -> None:
        for name in ("energy_weight", "force_weight", "stress_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.loss not in ("mse", "huber", "l1"):
            raise ValueError(f"loss must be 'mse', 'huber' or 'l1', got {self.loss!r}")
        if self.lr <= 0 or self.max_epochs < 0 or self.batch_size < 1:
            raise ValueError("lr must be > 0, max_epochs >= 0, batch_size >= 1")
        if self.validate_every < 1 or self.patience < 1:
            raise ValueError("validate_every and patience must be >= 1")
        if self.max_displacements is not None and self.max_displacements < 1:
            raise ValueError(f"max_displacements must be >= 1, got {self.max_displacements}")


@dataclass
class FineTuneResult:
    """Outcome of :func:`finetune`.

    Attributes
    ----------
    potential : matgl.apps.pes.Potential
        The fine-tuned potential (best validation epoch), convention preserved.
    model_dir : Path or None
        Where it was saved.
    before, after : EvaluationResult or None
        Phonon evaluation on the validation compounds with the pretrained / fine-tuned model.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``train_force_mae``, ``train_energy_mae``,
        ``val_frequency_mae_thz`` (when validated), ``lr``.
    best_epoch : int
        Epoch of the kept weights (0 = pretrained).
    training_time_s : float
    forgetting : dict
        See :func:`forgetting_guard`.
    provenance : dict
        Base model, data, settings, metrics (also written to ``provenance.json``).
    """

    potential: Potential
    model_dir: Path | None
    before: EvaluationResult | None
    after: EvaluationResult | None
    history: list[dict[str, Any]]
    best_epoch: int
    training_time_s: float
    forgetting: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def _sample(converter: Any, atoms: Atoms, forces: Any, energy: Any, stress: Any, weight: float):
    import matgl
    import torch

    graph, lattice, state = converter.get_graph(atoms)
    labels = {
        "force_weight": float(weight),
        "energies": float("nan") if energy is None else float(energy),
        "forces": torch.as_tensor(np.asarray(forces), dtype=matgl.float_th),
        "stresses": (
            torch.full((3, 3), float("nan"), dtype=matgl.float_th)
            if stress is None
            else torch.as_tensor(-EV_PER_A3_TO_GPA * np.asarray(stress), dtype=matgl.float_th)
        ),
    }
    return (
        graph,
        torch.as_tensor(lattice, dtype=matgl.float_th).reshape(1, 3, 3),
        torch.as_tensor(np.asarray(state), dtype=matgl.float_th),
        labels,
    )


def _compound_chunks(
    fs: ForceSet, converter: Any, batch_size: int, force_constant_weighting: bool, seed: int
) -> list[list[tuple]]:
    """The training chunks of one force set (see :func:`build_samples`)."""
    ref_forces = (
        fs.reference_forces if fs.reference_forces is not None else np.zeros((len(fs.reference), 3))
    )
    reference = _sample(converter, fs.reference, ref_forces, fs.reference_energy, None, 1.0)
    weights = fs.loss_weights() if force_constant_weighting else np.ones(len(fs))
    samples = [
        _sample(converter, atoms, forces, energy, stress, weight)
        for atoms, forces, energy, stress, weight in zip(
            fs.supercells, fs.forces, fs.energies, fs.stresses, weights, strict=True
        )
    ]
    order = np.random.default_rng([seed, len(samples)]).permutation(len(samples))
    return [
        [reference] + [samples[i] for i in order[start : start + batch_size]]
        for start in range(0, len(samples), batch_size)
    ]


def _force_set_digest(fs: ForceSet, *extra: Any) -> str:
    """Content hash of a force set's structures and labels (and ``extra`` settings)."""
    digest = hashlib.sha256(json.dumps([fs.name, *extra], default=str).encode())
    for atoms in (fs.reference, *fs.supercells):
        digest.update(atoms.numbers.tobytes())
        digest.update(np.ascontiguousarray(atoms.positions).tobytes())
        digest.update(np.ascontiguousarray(atoms.cell.array).tobytes())
    for forces in fs.forces:
        digest.update(np.ascontiguousarray(forces).tobytes())
    digest.update(json.dumps([fs.energies, fs.reference_energy], default=str).encode())
    for stress in fs.stresses:
        digest.update(b"-" if stress is None else np.ascontiguousarray(stress).tobytes())
    if fs.reference_forces is not None:
        digest.update(np.ascontiguousarray(fs.reference_forces).tobytes())
    return digest.hexdigest()


#: Environment variable naming tdphonon's cache folder (graphs under ``graphs/``).
CACHE_ENV_VAR = "TDPHONON_CACHE"


def default_graph_cache() -> Path:
    """``$TDPHONON_CACHE/graphs``, else ``~/.cache/tdphonon/graphs``."""
    root = os.environ.get(CACHE_ENV_VAR, "").strip()
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "tdphonon"
    return base / "graphs"


class GraphCache:
    """Training graphs of force sets, built once and kept on disk.

    One file per force set (``<name>-<hash>.pt``), named by a hash of its structures,
    labels, the model's elements and cutoff, and the batching settings, so that the same
    data is never converted twice: not in another epoch, not in another run, not by another
    process sharing the folder (files are written atomically). A changed force set or model
    gets a new file.

    Parameters
    ----------
    directory : str or os.PathLike
        Cache folder (created when needed).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def path(self, fs: ForceSet, key: str) -> Path:
        """File of ``fs`` for the settings summarised by ``key``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in fs.name)[:80]
        return self.directory / f"{safe}-{_force_set_digest(fs, key)[:24]}.pt"

    def chunks(self, fs: ForceSet, key: str, build: Callable[[], list]) -> Path:
        """The cache file of ``fs``, built with ``build()`` if absent."""
        import torch

        path = self.path(fs, key)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
            torch.save(build(), partial)
            os.replace(partial, path)
        return path


class _CachedChunks:
    """Map-style dataset of training chunks that live in :class:`GraphCache` files.

    Holds only (file, position) pairs; a chunk is read when the loader asks for it, and the
    chunks of the last file read are kept (one compound), so memory is bounded by one
    compound whatever the number of compounds.
    """

    def __init__(self, files: list[tuple[Path, int]]) -> None:
        self.items = [(path, i) for path, n in files for i in range(n)]
        self._loaded: tuple[Path | None, list] = (None, [])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> list[tuple]:
        import torch

        path, position = self.items[index]
        if self._loaded[0] != path:
            self._loaded = (path, torch.load(path, weights_only=False))
        return self._loaded[1][position]


def build_samples(
    force_sets: Sequence[ForceSet],
    potential: Potential,
    batch_size: int = 4,
    force_constant_weighting: bool = True,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> Any:
    """matgl training batches: per compound, the undisplaced supercell + displaced ones.

    Every batch ("chunk") holds the undisplaced supercell of one force set first, followed by
    up to ``batch_size`` of its displaced supercells (seeded random grouping, the same for a
    force set whatever the others), so that the loss can compare forces *relative to the
    undisplaced supercell*, as the phonon protocol of :mod:`tdphonon.evaluation` does.

    Each sample is ``(graph, lattice, state_attr, labels)``; labels: ``energies`` (eV, NaN
    when absent), ``forces`` (eV/Å; for the undisplaced supercell the DFT residual forces if
    the set has them, else zeros, used only as the reference of the differences),
    ``stresses`` ((3, 3) GPa in matgl's sign convention, NaN when absent) and
    ``force_weight`` (see :class:`FineTuneSettings`). Graphs come from matgl's
    ``Atoms2Graph`` with the model's elements and cutoff, as in
    :class:`tdphonon.potentials.MatglCalculator`.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Build every force set's graphs once into this :class:`GraphCache` folder and return
        a dataset that reads them from disk when needed (bounded memory, reused by later
        runs). None: build them all in memory.

    Returns
    -------
    list of chunks, or a dataset of them (indexable, with ``len``) when ``cache_dir`` is set.
    """
    from matgl.ext.ase import Atoms2Graph

    model = potential.model
    elements, cutoff = tuple(model.element_types), float(model.cutoff)
    converter = Atoms2Graph(elements, cutoff)

    def build(fs: ForceSet) -> list[list[tuple]]:
        return _compound_chunks(fs, converter, batch_size, force_constant_weighting, seed)

    if cache_dir is None:
        return [chunk for fs in force_sets for chunk in build(fs)]
    cache = GraphCache(cache_dir)
    key = json.dumps(
        [elements, cutoff, batch_size, force_constant_weighting, seed, _SAMPLES_VERSION]
    )
    files = []
    for fs in force_sets:
        path = cache.chunks(fs, key, lambda fs=fs: build(fs))
        files.append((path, -(-len(fs) // batch_size)))
    return _CachedChunks(files)


def _collate(chunks: list) -> tuple:
    import torch
    from matgl.graph.data import collate_fn_pes

    (batch,) = chunks
    g, lat, state, e, f, s = collate_fn_pes(batch, include_stress=True)
    weights = torch.tensor([float(labels["force_weight"]) for *_, labels in batch], dtype=f.dtype)
    return g, lat.reshape(-1, 3, 3), state, e, f, s, weights


class _EpochShuffle:
    """Sampler: a permutation seeded by (seed, epoch), so that a run resumed from a checkpoint
    sees the same order as an uninterrupted one (lightning calls ``set_epoch``)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist())


def _fingerprint(
    base: str, train: Sequence[ForceSet], validation: Sequence[ForceSet], settings: FineTuneSettings
) -> str:
    """Hash of what a checkpoint depends on (file locations excluded)."""

    def summary(s: ForceSet) -> dict[str, Any]:
        return {k: v for k, v in s.summary().items() if k != "source"}

    text = json.dumps(
        {
            "base": base,
            "train": [summary(s) for s in train],
            "validation": [summary(s) for s in validation],
            "settings": asdict(settings),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# lightning module
# ---------------------------------------------------------------------------------------------


def _module_class() -> type:
    import torch
    from matgl.utils.training import PotentialLightningModule

    class MaskedPotentialModule(PotentialLightningModule):
        """PotentialLightningModule training a given (convention-fixed) Potential.

        Absent energy / stress labels (NaN) are masked per structure; a batch with none
        contributes zero to that term. The learning rate follows a cosine decay over the
        epochs (one scheduler step per epoch).
        """

        def __init__(self, potential: Potential, settings: FineTuneSettings) -> None:
            loss = {"mse": "mse_loss", "huber": "huber_loss", "l1": "l1_loss"}[settings.loss]
            super().__init__(
                model=potential.model,
                energy_weight=settings.energy_weight,
                force_weight=settings.force_weight,
                stress_weight=settings.stress_weight,
                data_mean=potential.data_mean.detach().clone(),
                data_std=potential.data_std.detach().clone(),
                loss=loss,
                lr=settings.lr,
            )
            # train the loaded potential itself: keeps its element refs, data_mean/std,
            # convention and tdphonon_info
            self.model = potential
            potential.calc_stresses = settings.stress_weight > 0
            self.settings = settings

        def step(self, batch: tuple) -> tuple[dict[str, Any], int]:
            g, lat, state_attr, energies, forces, stresses, weights = batch
            torch.set_grad_enabled(True)
            out = self.model(g=g, lat=lat, state_attr=state_attr)
            num_atoms = torch.bincount(g.batch)
            n_ref = int(num_atoms[0])  # the chunk's undisplaced supercell comes first
            f_pred, f_label = out[1], forces
            if self.settings.subtract_reference:
                # forces relative to the undisplaced supercell, for labels and predictions
                f_pred = (f_pred[n_ref:].view(-1, n_ref, 3) - f_pred[:n_ref]).view(-1, 3)
                f_label = (f_label[n_ref:].view(-1, n_ref, 3) - f_label[:n_ref]).view(-1, 3)
            else:
                f_pred, f_label = f_pred[n_ref:], f_label[n_ref:]
            self._weights = weights
            results = self.loss_fn(
                self.loss, (energies, f_label, stresses), (out[0], f_pred, out[2]), num_atoms
            )
            return results, len(energies) - 1

        def loss_fn(self, loss, labels, preds, num_atoms=None):
            e_label, f_label, s_label = labels
            e_pred, f_pred, s_pred = preds
            e_pred = e_pred.reshape(-1)
            zero = f_pred.sum() * 0.0
            weights = self._weights
            e_mask = ~torch.isnan(e_label)
            if int(e_mask.sum()) >= 2:
                # per-atom energies relative to their weighted mean over the batch (one
                # compound): differences, free of any constant offset
                w = weights[e_mask] / weights[e_mask].sum()
                e_l = e_label[e_mask] / num_atoms[e_mask]
                e_p = e_pred[e_mask] / num_atoms[e_mask]
                e_l, e_p = e_l - (w * e_l).sum(), e_p - (w * e_p).sum()
                root = torch.sqrt(w * len(w))
                e_loss = loss(root * e_p, root * e_l, **self.loss_params)
                e_mae = (e_p - e_l).abs().mean()
            else:
                e_loss, e_mae = zero, zero.detach()
            # per-supercell weights (force-constant weighting): sqrt(w) scales the residual
            # (the batch's first structure, the undisplaced supercell, has no force term)
            root_w = torch.sqrt(torch.repeat_interleave(weights[1:], num_atoms[1:]))[:, None]
            f_loss = loss(root_w * f_pred, root_w * f_label, **self.loss_params)
            f_mae = (f_pred - f_label).abs().mean()
            total = self.energy_weight * e_loss + self.force_weight * f_loss
            s_mae = zero.detach()
            if self.model.calc_stresses:
                s_mask = ~torch.isnan(s_label).any(dim=1)
                if s_mask.any():
                    s_loss = loss(s_pred[s_mask], s_label[s_mask], **self.loss_params)
                    s_mae = (s_pred[s_mask] - s_label[s_mask]).abs().mean()
                    total = total + self.stress_weight * s_loss
            return {
                "Total_Loss": total,
                "Energy_MAE": e_mae,
                "Force_MAE": f_mae,
                "Stress_MAE": s_mae,
            }

        def configure_optimizers(self):
            params = [p for p in self.model.parameters() if p.requires_grad]
            optimizer = torch.optim.Adam(params, lr=self.lr, eps=1e-8)
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer,
                T_max=max(1, self.settings.max_epochs),
                eta_min=self.lr * self.settings.lr_min_ratio,
            )
            return [optimizer], [scheduler]

    return MaskedPotentialModule


def _set_trainable(potential: Potential, trainable: str | list[str]) -> dict[str, int]:
    """Freeze parameters; return counts of trainable / frozen parameters."""
    if trainable == "all":
        prefixes = ["model."]
    elif trainable == "readout":
        prefixes = ["model.final_layer"]
    elif trainable == "interactions":
        prefixes = ["model.graph_layers", "model.three_body_interactions", "model.final_layer"]
    elif trainable == "last-block":
        prefixes = ["model.final_layer"]
        for blocks in ("graph_layers", "three_body_interactions"):
            n_blocks = len(getattr(potential.model, blocks, ()))
            if n_blocks:
                prefixes.append(f"model.{blocks}.{n_blocks - 1}.")
    elif isinstance(trainable, str):
        raise ValueError(
            f"trainable must be 'all', 'last-block', 'interactions', 'readout' or a list of "
            f"parameter-name prefixes, got {trainable!r}"
        )
    else:
        prefixes = list(trainable)
    counts = {"trainable": 0, "frozen": 0}
    matched = False
    for name, param in potential.named_parameters():
        train = name.startswith(tuple(prefixes)) and "element_refs" not in name
        matched |= train
        param.requires_grad_(train)
        counts["trainable" if train else "frozen"] += param.numel()
    if not matched:
        raise ValueError(f"no parameter matches the trainable prefixes {prefixes}")
    return counts


# ---------------------------------------------------------------------------------------------
# forgetting guard
# ---------------------------------------------------------------------------------------------


def forgetting_guard(
    pretrained: Any, finetuned: Any, structures: Sequence[Atoms]
) -> dict[str, Any]:
    """Change of energies and forces between two potentials on structures outside training.

    Parameters
    ----------
    pretrained, finetuned : ForceCalculator
    structures : sequence of ase.Atoms
        Structures not used in training.

    Returns
    -------
    dict
        ``n_structures``, ``energy_change_mae_ev_per_atom`` (mean |ΔE|/atom),
        ``energy_change_mae_ev_per_atom_shifted`` (after removing the mean per-atom shift,
        i.e. the change of relative energies), ``force_change_mae_ev_per_angstrom``,
        ``force_change_max_ev_per_angstrom``.
    """
    if not structures:
        return {"n_structures": 0}
    e0, f0 = pretrained.compute_ragged(structures)
    e1, f1 = finetuned.compute_ragged(structures)
    n = np.array([len(a) for a in structures])
    de = (e1 - e0) / n
    df = np.concatenate([np.abs(a - b).reshape(-1) for a, b in zip(f1, f0, strict=True)])
    return {
        "n_structures": len(structures),
        "energy_change_mae_ev_per_atom": float(np.abs(de).mean()),
        "energy_change_mae_ev_per_atom_shifted": float(np.abs(de - de.mean()).mean()),
        "force_change_mae_ev_per_angstrom": float(df.mean()),
        "force_change_max_ev_per_angstrom": float(df.max()),
    }


def _read_checkpoint(path: Path | None, fingerprint: str) -> dict[str, Any] | None:
    """``{"history", "state", "module"}`` of a checkpoint written for these inputs, or None."""
    if path is None or not path.is_file():
        return None
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
        saved = data["callbacks"][_CALLBACK_KEY]
    except Exception as err:  # unreadable or foreign file: start afresh, never crash
        warnings.warn(f"ignoring unreadable fine-tuning checkpoint {path}: {err}", stacklevel=3)
        return None
    if saved.get("fingerprint") != fingerprint:
        warnings.warn(
            f"ignoring fine-tuning checkpoint {path}: it was written for another base model, "
            "data or settings",
            stacklevel=3,
        )
        return None
    return {"history": saved["history"], "state": saved["state"], "module": data["state_dict"]}


# ---------------------------------------------------------------------------------------------
# main entry
# ---------------------------------------------------------------------------------------------


def _check_data(train: Sequence[ForceSet], potential: Potential, base: str) -> None:
    from tdphonon.potentials import UnsupportedElementError

    if not train or sum(len(s) for s in train) == 0:
        raise ForceSetError("the training set is empty")
    known = set(potential.model.element_types)
    missing = {e for s in train for e in s.elements} - known
    if missing:
        raise UnsupportedElementError(missing, base)


def finetune(
    base_model: str | os.PathLike,
    train: Sequence[ForceSet],
    validation: Sequence[ForceSet] = (),
    settings: FineTuneSettings | None = None,
    out_dir: str | os.PathLike | None = None,
    guard_structures: Sequence[Atoms] | None = None,
    progress: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> FineTuneResult:
    """Fine-tune a pretrained matgl potential on DFT force sets.

    Parameters
    ----------
    base_model : str or os.PathLike
        matgl model folder or hub name, loaded with
        :func:`tdphonon.potentials.load_potential`.
    train : sequence of ForceSet
        Training compounds.
    validation : sequence of ForceSet
        Validation compounds (never trained on): phonon-frequency MAE for model selection
        and early stopping. Without them, the last epoch is kept.
    settings : FineTuneSettings, optional
    out_dir : str or os.PathLike, optional
        Save the model here (:func:`tdphonon.potentials.save_potential`) with
        ``provenance.json``.
    guard_structures : sequence of ase.Atoms, optional
        Structures for the forgetting guard; default: the undisplaced and first displaced
        supercell of every validation compound.
    progress : bool
        Show lightning's progress bar.
    checkpoint_dir : str or os.PathLike, optional
        After every epoch the whole training state (weights, optimiser, learning-rate
        schedule, epoch, history, best weights so far) is written to
        ``checkpoint_dir/last.ckpt``. If that file exists when training starts and was
        written for the same base model, data and settings, training resumes after its last
        finished epoch, with the same result as an uninterrupted run; a checkpoint of other
        inputs is ignored with a warning.
    on_checkpoint : callable, optional
        Called with the checkpoint file after each write (e.g. to copy it to a database).
    cache_dir : str or os.PathLike, optional
        :class:`GraphCache` folder: every compound's training graphs are built once, kept
        on disk and read when needed (memory bounded by one compound; later runs and
        resumed runs reuse them). None: built in memory.

    Returns
    -------
    FineTuneResult

    Raises
    ------
    ForceSetError
        Empty training set, or a compound both in training and validation.
    UnsupportedElementError
        An element the base model does not know (before any training).
    """
    import lightning as pl
    import torch
    from torch.utils.data import DataLoader

    from tdphonon.potentials import MatglCalculator, load_potential

    settings = settings or FineTuneSettings()
    overlap = {s.name for s in train} & {s.name for s in validation}
    if overlap:
        raise ForceSetError(f"compound(s) {sorted(overlap)} both in training and validation")
    potential = load_potential(base_model)
    base_name = potential.tdphonon_info["name"]
    _check_data(train, potential, base_name)
    if validation:
        _check_data(validation, potential, base_name)
    device = "cpu"
    if settings.device != "cpu":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    pl.seed_everything(settings.seed, workers=True, verbose=False)

    pretrained_calc = MatglCalculator(copy.deepcopy(potential), device=device)
    param_counts = _set_trainable(potential, settings.trainable)
    if settings.max_displacements is not None:
        train = [s.training_subset(settings.max_displacements, settings.seed) for s in train]
    chunks = build_samples(
        train,
        potential,
        settings.batch_size,
        settings.force_constant_weighting,
        settings.seed,
        cache_dir=cache_dir,
    )
    loader = DataLoader(
        chunks,
        batch_size=1,
        sampler=_EpochShuffle(len(chunks), settings.seed),
        collate_fn=_collate,
        num_workers=0,
    )
    loop = _TrainingLoop(
        potential,
        validation,
        settings,
        device,
        fingerprint=_fingerprint(base_name, train, validation, settings),
        checkpoint=None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_FILE,
        on_checkpoint=on_checkpoint,
    )
    resumed = loop.start()
    loop.train(loader, resumed, progress)
    loop.restore_best()

    finetuned_calc = MatglCalculator(potential, device=device)
    after = evaluate(validation, finetuned_calc) if validation else None
    if guard_structures is None:
        guard_structures = [a for s in validation for a in (s.reference, s.supercells[0])]
    forgetting = forgetting_guard(pretrained_calc, finetuned_calc, list(guard_structures))
    potential.to("cpu")
    return _finish(
        loop, pretrained_calc, train, param_counts, after, forgetting, out_dir, base_name
    )


class _TrainingLoop:
    """The state of one fine-tuning run, its per-epoch validation and checkpoints.

    Holds the epoch history and the state worth keeping (best validation MAE and epoch,
    epochs without improvement, best weights, whether early stopping fired, training time,
    the pretrained model's validation). :meth:`epoch_end` is what lightning's callback
    (:func:`_callback_class`) calls after every epoch; the checkpoint holds this state with
    lightning's own, so a resumed run continues exactly where the interrupted one stopped.
    """

    def __init__(
        self,
        potential: Potential,
        validation: Sequence[ForceSet],
        settings: FineTuneSettings,
        device: str,
        fingerprint: str,
        checkpoint: Path | None,
        on_checkpoint: Callable[[Path], None] | None,
    ) -> None:
        self.potential = potential
        self.validation = validation
        self.settings = settings
        self.device = device
        self.fingerprint = fingerprint
        self.checkpoint = checkpoint
        self.on_checkpoint = on_checkpoint
        self.progress = False
        self.history: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {
            "best": np.inf,
            "best_epoch": 0,
            "bad": 0,
            "weights": None,
            "stopped": False,
            "training_time_s": 0.0,
            "before": None,
        }
        self._t0 = time.perf_counter()
        self._time_before = 0.0

    def validate(self) -> EvaluationResult | None:
        """Phonon errors of the current weights on the validation compounds."""
        if not self.validation:
            return None
        from tdphonon.potentials import MatglCalculator

        result = evaluate(self.validation, MatglCalculator(self.potential, device=self.device))
        self.potential.train()
        return result

    def start(self) -> dict[str, Any] | None:
        """Resume from the checkpoint of the same inputs, or validate the pretrained model.

        Returns the checkpoint's contents (None when starting afresh).
        """
        resumed = _read_checkpoint(self.checkpoint, self.fingerprint)
        if resumed is not None:  # the pretrained model's validation is in the checkpoint
            self.history[:] = resumed["history"]
            self.state.update(resumed["state"])
            logger.info(
                "fine-tune: resuming after epoch %d from %s", len(self.history), self.checkpoint
            )
        else:
            self.state["before"] = self.validate()
            if self.state["before"] is not None:
                self.state["best"] = self.state["before"].frequency_mae_thz
                self.state["weights"] = copy.deepcopy(self.potential.state_dict())
        return resumed

    def elapsed(self) -> float:
        """Training time so far, s, interrupted runs included."""
        return self._time_before + time.perf_counter() - self._t0

    def epoch_end(self, trainer: Any) -> None:
        """Record the epoch, validate (early stopping, best weights), write the checkpoint."""
        settings, state = self.settings, self.state
        epoch = trainer.current_epoch + 1
        metrics = trainer.callback_metrics
        record = {
            "epoch": epoch,
            "train_loss": float(metrics.get("train_Total_Loss", np.nan)),
            "train_force_mae": float(metrics.get("train_Force_MAE", np.nan)),
            "train_energy_mae": float(metrics.get("train_Energy_MAE", np.nan)),
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
        }
        if self.validation and (
            epoch % settings.validate_every == 0 or epoch == settings.max_epochs
        ):
            result = self.validate()
            mae = result.frequency_mae_thz
            record["val_frequency_mae_thz"] = mae
            record["val_force_mae"] = result.force_mae_ev_per_angstrom
            if mae < state["best"] - 1e-6:
                state.update(best=mae, best_epoch=epoch, bad=0)
                state["weights"] = copy.deepcopy(self.potential.state_dict())
            else:
                state["bad"] += 1
                if state["bad"] >= settings.patience:
                    trainer.should_stop = True
        elapsed = self.elapsed()
        record["elapsed_s"] = elapsed
        remaining = settings.max_epochs - epoch
        record["eta_s"] = 0.0 if trainer.should_stop else elapsed / epoch * remaining
        self.history.append(record)
        logger.info("fine-tune epoch %d: %s", epoch, record)
        if self.progress:
            val = record.get("val_frequency_mae_thz")
            print(
                f"epoch {epoch}/{settings.max_epochs}: loss {record['train_loss']:.3g}"
                + ("" if val is None else f", validation {val:.3f} THz")
                + f"; {elapsed:.0f} s, ETA {record['eta_s']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if self.checkpoint is not None:
            state["stopped"] = bool(trainer.should_stop)
            state["training_time_s"] = self.elapsed()
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            partial = self.checkpoint.with_name(self.checkpoint.name + ".partial")
            trainer.save_checkpoint(partial, weights_only=False)
            os.replace(partial, self.checkpoint)  # a crash mid-write keeps the previous one
            if self.on_checkpoint is not None:
                self.on_checkpoint(self.checkpoint)

    def train(self, loader: Any, resumed: dict[str, Any] | None, progress: bool) -> None:
        """Run lightning's trainer for the remaining epochs (none if a resumed run had ended)."""
        import lightning as pl

        settings = self.settings
        history = self.history
        self.progress = progress
        finished = resumed is not None and (
            self.state["stopped"] or len(history) >= settings.max_epochs
        )
        rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        rank_zero_level = rank_zero.level
        rank_zero.setLevel(logging.WARNING)
        try:
            with warnings.catch_warnings():
                for pattern in (
                    ".*potential.*",
                    ".*val_dataloader.*",
                    ".*LeafSpec.*",
                    ".*copy construct from a tensor.*",
                ):
                    warnings.filterwarnings("ignore", message=pattern)
                module = _module_class()(self.potential, settings)
                self._t0, self._time_before = time.perf_counter(), self.state["training_time_s"]
                # matgl's Potential builds the force graph for parameter gradients only in
                # train mode
                self.potential.train()
                if finished:  # interrupted after the last epoch: nothing left to train
                    module.load_state_dict(resumed["module"])
                elif settings.max_epochs > 0:
                    trainer = pl.Trainer(
                        max_epochs=settings.max_epochs,
                        accelerator="gpu" if self.device == "cuda" else "cpu",
                        devices=1,
                        deterministic=True,
                        logger=False,
                        enable_checkpointing=False,
                        enable_progress_bar=progress,
                        enable_model_summary=False,
                        num_sanity_val_steps=0,
                        gradient_clip_val=settings.max_grad_norm,
                        callbacks=[_callback_class()(self)],
                    )
                    trainer.fit(
                        module,
                        train_dataloaders=loader,
                        ckpt_path=None if resumed is None else self.checkpoint,
                        weights_only=False,  # our own checkpoint, its fingerprint checked
                    )
        finally:
            rank_zero.setLevel(rank_zero_level)
        self.state["training_time_s"] = self.elapsed()

    def restore_best(self) -> None:
        """Keep the best validated weights (else the last epoch's), ready to evaluate."""
        if self.validation and self.state["weights"] is not None:
            self.potential.load_state_dict(self.state["weights"])
        else:
            self.state["best_epoch"] = len(self.history)
        for param in self.potential.parameters():
            param.requires_grad_(True)
        self.potential.eval()
        self.potential.calc_stresses = False


def _callback_class() -> type:
    """lightning's callback that hands every epoch to a :class:`_TrainingLoop`.

    Made on first use (lightning is a heavy import), like :func:`_module_class`.
    """
    import lightning as pl

    class PhononValidation(pl.Callback):
        def __init__(self, loop: _TrainingLoop) -> None:
            self.loop = loop

        @property
        def state_key(self) -> str:
            return _CALLBACK_KEY

        def state_dict(self) -> dict[str, Any]:
            loop = self.loop
            return {"fingerprint": loop.fingerprint, "history": loop.history, "state": loop.state}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.loop.history[:] = state_dict["history"]
            self.loop.state.update(state_dict["state"])

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.loop.epoch_end(trainer)

    return PhononValidation


def _finish(
    loop: _TrainingLoop,
    pretrained_calc: Any,
    train: Sequence[ForceSet],
    param_counts: dict[str, int],
    after: EvaluationResult | None,
    forgetting: dict[str, Any],
    out_dir: str | os.PathLike | None,
    base_name: str,
) -> FineTuneResult:
    """The provenance of a finished run, the saved model and the :class:`FineTuneResult`."""
    from tdphonon import __version__
    from tdphonon.potentials import save_potential

    state, potential = loop.state, loop.potential
    before, training_time = state["before"], state["training_time_s"]
    provenance = {
        "base_model": pretrained_calc.provenance(),
        "train": [s.summary() for s in train],
        "validation": [s.summary() for s in loop.validation],
        "settings": asdict(loop.settings),
        "parameters": param_counts,
        "best_epoch": state["best_epoch"],
        "history": loop.history,
        "metrics": {
            "validation_before": before.as_dict() if before else None,
            "validation_after": after.as_dict() if after else None,
            "forgetting": forgetting,
            "training_time_s": training_time,
            "n_training_supercells": sum(len(s) for s in train),
        },
        "tdphonon_version": __version__,
    }
    model_dir = None
    if out_dir is not None:
        model_dir = save_potential(
            potential,
            out_dir,
            metadata={"finetune": {"base_model": base_name, "best_epoch": state["best_epoch"]}},
        )
        (Path(model_dir) / "provenance.json").write_text(json.dumps(provenance, indent=1))
    return FineTuneResult(
        potential=potential,
        model_dir=None if model_dir is None else Path(model_dir),
        before=before,
        after=after,
        history=loop.history,
        best_epoch=state["best_epoch"],
        training_time_s=training_time,
        forgetting=forgetting,
        provenance=provenance,
    )
