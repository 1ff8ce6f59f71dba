"""Restore the pre-3.0 matgl message-passing convention on loaded models.

matgl 3.0 changed the direction of message aggregation in its graph layers: per-edge messages
are now summed onto the edge's *source* atom (``edge_index[0]``). Weights trained with matgl
<= 2.x (for instance the ``M3GNet-MP-2021.2.8-PES`` universal potential) were trained when the
messages were summed onto the *destination* atom (``edge_index[1]``). matgl >= 3 loads such
weights without any error or warning and gives plausible but wrong results (e.g. a dynamically
unstable rocksalt NaCl).

This module repairs a *loaded model instance*; it never patches matgl globally, so other models
in the same process are unaffected.

* **M3GNet**: the node update of every :class:`matgl.layers.M3GNetGraphConv` must index-add the
  messages ``phi([v_src, v_dst, e_ij]) * W(rbf_ij)`` over ``edge_index[1]``. This is a behaviour
  of the layer (the directed edge features make it impossible to emulate by permuting weights),
  so each conv module of the instance gets its class switched to
  :class:`DestinationAggregationM3GNetGraphConv`, a subclass that overrides only
  ``node_update_``. The state dict keys are unchanged, so the patched model can be trained,
  saved with :meth:`matgl.apps.pes.Potential.save` and reloaded as usual; the convention itself
  must be recorded separately (see :func:`write_convention_sidecar`).
  A second, tiny difference remains (about 1e-4 eV/Å in forces): matgl 2.x indexed three-body
  triplets by their position in the list of bonds shorter than the three-body cutoff, so the
  summation order, and hence float32 rounding, differs slightly. It is not reproduced here.
* **TensorNet**: the old convention is equivalent to a pure weight conversion: swap the two
  column halves of ``tensor_embedding.emb2.weight`` and negate
  ``tensor_embedding.distance_proj2.weight`` and ``.bias``. After conversion the model uses the
  current (source) convention.

Which convention a saved model uses is recorded in a small sidecar file ``tdphonon.json`` in the
model folder (``{"message_convention": "destination" | "source"}``) and in the ``metadata`` field
of ``model.json`` when the model is saved with :func:`tdphonon.potentials.save_potential`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import torch
from matgl.layers import M3GNetGraphConv
from torch import nn

__all__ = [
    "AFFECTED_ARCHITECTURES",
    "CONVENTIONS",
    "SIDECAR_NAME",
    "DestinationAggregationM3GNetGraphConv",
    "MessageConvention",
    "apply_m3gnet_destination_convention",
    "convention_from_metadata",
    "convention_from_name",
    "convert_tensornet_destination_weights",
    "m3gnet_convention",
    "read_convention_sidecar",
    "write_convention_sidecar",
]

MessageConvention = Literal["destination", "source"]
CONVENTIONS: tuple[str, ...] = ("destination", "source")
SIDECAR_NAME = "tdphonon.json"

#: Architectures whose results depend on the aggregation direction changed in matgl 3.0
#: (from matgl's changelog and layer docstrings). CHGNet still aggregates onto ``dst`` and
#: SO3Net is not affected.
AFFECTED_ARCHITECTURES: tuple[str, ...] = ("M3GNet", "TensorNet", "QET", "MEGNet")

# Pretrained names of the matgl <= 2.x era end in "-PES" ("M3GNet-MP-2021.2.8-PES",
# "TensorNet-MatPES-PBE-v2025.1-PES"); the retrained matgl >= 3 models on the
# ``materialyze`` hub put "PES" second ("TensorNet-PES-MatPES-PBE-2025.2").
_LEGACY_NAME_RE = re.compile(r"^(M3GNet|TensorNet|QET|MEGNet|CHGNet|SO3Net)-.*-PES$", re.IGNORECASE)
_NEW_NAME_RE = re.compile(r"^(M3GNet|TensorNet|QET|MEGNet|CHGNet|SO3Net)-PES-", re.IGNORECASE)


def _scatter_add(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` rows given by ``index`` (differentiable)."""
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add(0, index.to(torch.long), src)


class DestinationAggregationM3GNetGraphConv(M3GNetGraphConv):
    """M3GNet graph convolution with the matgl <= 2.x (destination) node aggregation.

    Identical to :class:`matgl.layers.M3GNetGraphConv` except that the node-update messages
    are summed onto the destination atom of each edge (``edge_index[1]``), as in the DGL
    implementation the pretrained weights were trained with. Installed on a model instance by
    :func:`apply_m3gnet_destination_convention`; never constructed directly.
    """

    def node_update_(
        self,
        edge_index: torch.Tensor,
        edge_feat: torch.Tensor,
        node_feat: torch.Tensor,
        rbf: torch.Tensor,
        u_per_edge: torch.Tensor | None,
        num_nodes: int,
    ) -> torch.Tensor:
        """Compute the node-update messages (Eq. 5) and sum them onto destination atoms.

        Parameters
        ----------
        edge_index : torch.Tensor
            Connectivity, shape ``(2, n_edges)``; row 0 source, row 1 destination.
        edge_feat : torch.Tensor
            Updated edge features, shape ``(n_edges, dim_edge)``.
        node_feat : torch.Tensor
            Node features, shape ``(n_nodes, dim_node)``.
        rbf : torch.Tensor
            Radial basis of each edge, shape ``(n_edges, degree)``.
        u_per_edge : torch.Tensor or None
            State features broadcast to edges (only with ``include_state``).
        num_nodes : int
            Number of nodes in the (batched) graph.

        Returns
        -------
        torch.Tensor
            Node update, shape ``(n_nodes, dim_node)``.
        """
        src, dst = edge_index[0], edge_index[1]
        parts = [node_feat[src], node_feat[dst], edge_feat]
        if self.include_state:
            if u_per_edge is None:
                raise ValueError("include_state=True requires state features per edge")
            parts.append(u_per_edge)
        mess = self.node_update_func(torch.hstack(parts)) * self.node_weight_func(rbf)
        return _scatter_add(mess, dst, num_nodes)


def apply_m3gnet_destination_convention(model: nn.Module) -> int:
    """Switch every M3GNet graph convolution of ``model`` to destination aggregation.

    Only the given instance is changed (its conv modules get their ``__class__`` set to
    :class:`DestinationAggregationM3GNetGraphConv`); matgl itself and other models are not
    touched. Idempotent.

    Parameters
    ----------
    model : torch.nn.Module
        A matgl ``M3GNet`` model or a ``Potential`` wrapping one.

    Returns
    -------
    int
        Number of conv modules switched by this call (0 if already applied).

    Raises
    ------
    ValueError
        If ``model`` contains no M3GNet graph convolution at all.
    """
    n_found = 0
    n_switched = 0
    for module in model.modules():
        if isinstance(module, M3GNetGraphConv):
            n_found += 1
            if type(module) is M3GNetGraphConv:
                module.__class__ = DestinationAggregationM3GNetGraphConv
                n_switched += 1
    if n_found == 0:
        raise ValueError("the model contains no M3GNetGraphConv module; is it an M3GNet model?")
    return n_switched


def m3gnet_convention(model: nn.Module) -> MessageConvention | None:
    """Return the aggregation convention a loaded M3GNet instance uses.

    Parameters
    ----------
    model : torch.nn.Module
        Model or ``Potential``.

    Returns
    -------
    {"destination", "source"} or None
        ``None`` if the model contains no M3GNet graph convolution.

    Raises
    ------
    ValueError
        If the conv modules are a mixture of both conventions.
    """
    kinds = {
        isinstance(m, DestinationAggregationM3GNetGraphConv)
        for m in model.modules()
        if isinstance(m, M3GNetGraphConv)
    }
    if not kinds:
        return None
    if len(kinds) > 1:
        raise ValueError("M3GNet conv modules use a mixture of message conventions")
    return "destination" if kinds.pop() else "source"


def convert_tensornet_destination_weights(model: nn.Module) -> None:
    """Convert old (destination-convention) TensorNet weights to the current convention, in place.

    Swaps the two column halves of ``tensor_embedding.emb2.weight`` and negates
    ``tensor_embedding.distance_proj2.weight`` and ``.bias``. Applying it twice restores the
    original weights, so it must be applied exactly once after loading.

    Parameters
    ----------
    model : torch.nn.Module
        A matgl ``TensorNet`` model or a ``Potential`` wrapping one.

    Raises
    ------
    ValueError
        If no TensorNet tensor embedding is found.
    """
    inner = getattr(model, "model", model)
    emb = getattr(inner, "tensor_embedding", None)
    if emb is None or not hasattr(emb, "emb2") or not hasattr(emb, "distance_proj2"):
        raise ValueError("the model has no TensorNet tensor_embedding.emb2/distance_proj2")
    with torch.no_grad():
        w = emb.emb2.weight
        half = w.shape[1] // 2
        w.copy_(torch.cat([w[:, half:], w[:, :half]], dim=1))
        emb.distance_proj2.weight.neg_()
        if emb.distance_proj2.bias is not None:
            emb.distance_proj2.bias.neg_()


def read_convention_sidecar(folder: str | Path) -> MessageConvention | None:
    """Read the message convention recorded in ``folder/tdphonon.json``.

    Parameters
    ----------
    folder : str or Path
        Model folder.

    Returns
    -------
    {"destination", "source"} or None
        ``None`` if there is no sidecar file or it records no convention.

    Raises
    ------
    ValueError
        If the sidecar exists but is not valid JSON or names an unknown convention.
    """
    path = Path(folder) / SIDECAR_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    conv = data.get("message_convention") if isinstance(data, dict) else None
    if conv is None:
        return None
    if conv not in CONVENTIONS:
        raise ValueError(f"{path}: message_convention must be one of {CONVENTIONS}, got {conv!r}")
    return conv


def write_convention_sidecar(
    folder: str | Path, convention: MessageConvention, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``folder/tdphonon.json`` recording the message convention of the saved weights.

    Parameters
    ----------
    folder : str or Path
        Model folder (must exist).
    convention : {"destination", "source"}
        Convention the saved weights were trained with.
    extra : dict, optional
        Further JSON-serialisable fields to record (e.g. versions, provenance).

    Returns
    -------
    Path
        Path of the written file.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    data: dict[str, Any] = {"message_convention": convention}
    if extra:
        data.update(extra)
    path = Path(folder) / SIDECAR_NAME
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def _major_version(version: str) -> int | None:
    match = re.match(r"^\s*v?(\d+)", str(version))
    return int(match.group(1)) if match else None


def convention_from_metadata(metadata: Any) -> MessageConvention | None:
    """Decide the convention from the ``metadata`` field of a ``model.json``.

    Recognised keys: ``message_convention`` (top level or under ``"tdphonon"``) and
    ``matgl_version`` (major version < 3 means destination).

    Parameters
    ----------
    metadata : Any
        The ``metadata`` value of ``model.json`` (``None`` for matgl's own pretrained models).

    Returns
    -------
    {"destination", "source"} or None
        ``None`` when the metadata says nothing about it.
    """
    if not isinstance(metadata, dict):
        return None
    scopes = [metadata]
    if isinstance(metadata.get("tdphonon"), dict):
        scopes.insert(0, metadata["tdphonon"])
    for scope in scopes:
        conv = scope.get("message_convention")
        if conv in CONVENTIONS:
            return conv
    for scope in scopes:
        major = _major_version(scope.get("matgl_version", ""))
        if major is not None:
            return "destination" if major < 3 else "source"
    return None


def convention_from_name(name: str) -> MessageConvention | None:
    """Guess the convention from a pretrained model name.

    Parameters
    ----------
    name : str
        Model name, e.g. ``"M3GNet-MP-2021.2.8-PES"`` (legacy naming, destination) or
        ``"TensorNet-PES-MatPES-PBE-2025.2"`` (matgl >= 3 naming, source). A hub id's
        ``owner/`` prefix is ignored.

    Returns
    -------
    {"destination", "source"} or None
        ``None`` when the name follows neither naming scheme.
    """
    base = name.rstrip("/").rsplit("/", 1)[-1]
    if _NEW_NAME_RE.match(base):
        return "source"
    if _LEGACY_NAME_RE.match(base):
        return "destination"
    return None
