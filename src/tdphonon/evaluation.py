"""Phonon-frequency error of a potential against DFT force sets.

Protocol (the same for the DFT forces and the potential's forces, so that only the forces
differ):

1. The potential computes forces on the *same* displaced supercells as the DFT set (its
   harmonic dataset: the finite displacements of a phonopy set, the first displacements of
   a phono3py fc3 set, or all supercells of a random-displacement set), plus the undisplaced
   supercell.
2. Residual forces of the undisplaced supercell are subtracted from every displaced
   supercell's forces (the potential's own residual forces; for DFT only if the set carries
   them).
3. Force constants are built the same way for both: phonopy's finite-displacement method
   (``produce_force_constants()`` + ``symmetrize_force_constants()``) for finite
   displacements; for random displacements a least-squares fit on symfc's symmetry basis
   (:class:`tdphonon.fitting.ForceConstantFitter`) weighted by
   :meth:`ForceSet.loss_weights` (from the DFT forces, the same weights for both), so that
   large-amplitude snapshots do not set the force constants of a set that also holds
   near-equilibrium ones (with small displacements the weights are nearly uniform).
4. Frequencies (THz; imaginary ones as negative numbers) on a Gamma-centred mesh of
   :data:`MESH_LENGTH` (phonopy's length-based mesh, about 1/Å reciprocal density), with the
   non-analytical correction where the force set carries Born charges and a dielectric
   tensor (:attr:`ForceSet.nac_params`, e.g. phonondb's ``BORN``): the DFT quantities,
   applied identically to both sides; without them, none.
5. Frequency MAE of a compound: mean over the mesh (weighted by the irreducible q-point
   multiplicity) and over all bands of |ν_model - ν_DFT|. Force MAE: mean absolute
   difference of all force components of the same supercells (after step 2). The overall
   numbers are means over compounds.
6. Softening diagnostics: the mean signed frequency error (negative: the potential is too
   soft) and the frequency scale, the factor s that minimises the MAE of s·ν_model against
   ν_DFT (:func:`best_frequency_scale`). A universal potential typically has s > 1 for
   every compound; how much of its MAE is left at s tells the systematic softening from
   errors in the shape of the spectrum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from phonopy import Phonopy

    from tdphonon.forcesets import ForceSet
    from tdphonon.potentials import ForceCalculator

__all__ = [
    "MESH_LENGTH",
    "CompoundEvaluation",
    "EvaluationResult",
    "best_frequency_scale",
    "dft_frequencies",
    "evaluate",
    "evaluate_force_set",
    "frequencies_from_forces",
]

#: Length (Å) of phonopy's automatic Gamma-centred mesh used for the frequency MAE.
MESH_LENGTH = 20.0


@dataclass
class CompoundEvaluation:
    """Errors of a potential on one DFT force set.

    Attributes
    ----------
    name : str
        Compound.
    frequency_mae_thz : float
        Mean absolute frequency error on the mesh, THz.
    force_mae_ev_per_angstrom : float
        Mean absolute force-component error, eV/Å.
    n_supercells : int
        Displaced supercells compared.
    n_force_evaluations : int
        Force evaluations by the potential (displaced supercells + the undisplaced one).
    mesh : list of int
        Gamma-centred mesh.
    dft_min_frequency_thz, model_min_frequency_thz : float
        Lowest frequency on the mesh (negative: imaginary).
    frequency_mean_error_thz : float
        Mean signed error ν_model - ν_DFT on the mesh, THz (negative: too soft).
    frequency_scale : float
        Factor on the model's frequencies that minimises their MAE
        (:func:`best_frequency_scale`).
    model_frequencies : numpy.ndarray
        (n_irreducible_q, n_bands) the model's frequencies on the mesh, THz, in the order of
        :func:`dft_frequencies` (not in :meth:`as_dict`).
    """

    name: str
    frequency_mae_thz: float
    force_mae_ev_per_angstrom: float
    n_supercells: int
    n_force_evaluations: int
    mesh: list[int]
    dft_min_frequency_thz: float
    model_min_frequency_thz: float
    frequency_mean_error_thz: float
    frequency_scale: float
    model_frequencies: np.ndarray = field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (without the frequencies)."""
        return {k: v for k, v in asdict(self).items() if k != "model_frequencies"}


@dataclass
class EvaluationResult:
    """Per-compound and overall errors (overall = mean over compounds)."""

    compounds: list[CompoundEvaluation]
    model: str

    @property
    def frequency_mae_thz(self) -> float:
        """Mean of the per-compound frequency MAE, THz."""
        return float(np.mean([c.frequency_mae_thz for c in self.compounds]))

    @property
    def force_mae_ev_per_angstrom(self) -> float:
        """Mean of the per-compound force MAE, eV/Å."""
        return float(np.mean([c.force_mae_ev_per_angstrom for c in self.compounds]))

    @property
    def frequency_mean_error_thz(self) -> float:
        """Mean of the per-compound mean signed frequency error, THz."""
        return float(np.mean([c.frequency_mean_error_thz for c in self.compounds]))

    @property
    def n_force_evaluations(self) -> int:
        """Total force evaluations."""
        return sum(c.n_force_evaluations for c in self.compounds)

    def as_dict(self) -> dict[str, Any]:
        """``{"overall": {...}, "compounds": [...], "model": ..., "protocol": ...}``."""
        return {
            "overall": {
                "frequency_mae_thz": self.frequency_mae_thz,
                "force_mae_ev_per_angstrom": self.force_mae_ev_per_angstrom,
                "frequency_mean_error_thz": self.frequency_mean_error_thz,
                "n_compounds": len(self.compounds),
                "n_force_evaluations": self.n_force_evaluations,
            },
            "compounds": [c.as_dict() for c in self.compounds],
            "model": self.model,
            "protocol": {
                "mesh": f"Gamma-centred, phonopy length {MESH_LENGTH} Å",
                "nac": "Born charges of the force set where it has them (phonondb BORN), "
                "for the DFT and the model frequencies alike; otherwise none",
                "residual_forces_removed": True,
                "force_constants": "phonopy finite displacements / symfc for random sets",
            },
        }


def best_frequency_scale(
    model_frequencies: np.ndarray, dft_frequencies: np.ndarray, weights: np.ndarray
) -> float:
    """Factor s minimising the q-weighted MAE of ``s * model_frequencies`` vs DFT.

    Σ_q w_q Σ_b |s a_qb - b_qb| = Σ w_q |a_qb| |s - b_qb / a_qb| is minimised exactly by the
    weighted median of the ratios b/a with weights w_q |a_qb| (modes with a = 0 do not
    depend on s).

    Parameters
    ----------
    model_frequencies, dft_frequencies : numpy.ndarray
        (n_q, n_bands) THz.
    weights : numpy.ndarray
        (n_q,) q-point multiplicities.

    Returns
    -------
    float
    """
    a = np.asarray(model_frequencies, dtype=float).ravel()
    b = np.asarray(dft_frequencies, dtype=float).ravel()
    w = np.repeat(np.asarray(weights, dtype=float), np.shape(model_frequencies)[1]) * np.abs(a)
    keep = w > 0
    if not keep.any():
        return 1.0
    ratios, w = b[keep] / a[keep], w[keep]
    order = np.argsort(ratios)
    cumulative = np.cumsum(w[order])
    return float(ratios[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def _phonopy(force_set: ForceSet) -> Phonopy:
    from phonopy import Phonopy

    from tdphonon.structures import minimum_image_vectors, to_phonopy_atoms

    phonon = Phonopy(
        to_phonopy_atoms(force_set.unitcell),
        supercell_matrix=force_set.supercell_matrix,
        primitive_matrix=force_set.primitive_matrix,
        log_level=0,
    )
    ref = force_set.reference
    same = len(phonon.supercell) == len(ref) and (
        np.abs(minimum_image_vectors(phonon.supercell.positions - ref.positions, ref.cell)).max()
        < 1e-4
    )
    if not same:
        raise ValueError(
            f"force set {force_set.name!r}: the supercell rebuilt from its unit cell and "
            "supercell matrix differs from the stored undisplaced supercell"
        )
    nac_params = getattr(force_set, "nac_params", None)
    if nac_params is not None:
        if len(nac_params["born"]) != len(phonon.primitive):
            raise ValueError(
                f"force set {force_set.name!r}: {len(nac_params['born'])} Born charges for "
                f"the {len(phonon.primitive)} atoms of its primitive cell"
            )
        phonon.nac_params = nac_params
    return phonon


def frequencies_from_forces(
    force_set: ForceSet, forces: np.ndarray, mesh_length: float = MESH_LENGTH
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Frequencies on the Gamma-centred mesh from forces on the set's harmonic supercells.

    Parameters
    ----------
    force_set : ForceSet
        Gives the structure and the displacement dataset.
    forces : numpy.ndarray
        (n_harmonic, n_atoms, 3) forces on ``force_set.supercells[force_set.harmonic_indices]``,
        residual forces already removed, eV/Å.
    mesh_length : float
        phonopy's mesh length, Å.

    Returns
    -------
    frequencies : numpy.ndarray
        (n_irreducible_q, n_bands) THz.
    weights : numpy.ndarray
        Multiplicities of the irreducible q-points.
    mesh : list of int
    """
    phonon = _phonopy(force_set)
    forces = np.asarray(forces, dtype=float)
    if force_set.is_random:
        from tdphonon.fitting import ForceConstantFitter

        cache = force_set.metadata.setdefault("_cache", {})
        if "_fitter" not in cache:  # the symmetry basis: once per set, not per evaluation
            weights = force_set.loss_weights()[force_set.harmonic_indices]
            cache["_fitter"] = (ForceConstantFitter(phonon.supercell), weights)
        fitter, weights = cache["_fitter"]
        phonon.force_constants = fitter.fit(
            np.asarray(force_set.dataset["displacements"]), forces, weights
        )
    else:
        first_atoms = [
            {**entry, "forces": f}
            for entry, f in zip(force_set.dataset["first_atoms"], forces, strict=True)
        ]
        phonon.dataset = {"natom": len(force_set.reference), "first_atoms": first_atoms}
        phonon.produce_force_constants(show_drift=False)
        phonon.symmetrize_force_constants(show_drift=False)
    phonon.run_mesh(mesh_length, is_gamma_center=True, with_eigenvectors=False)
    mesh = phonon.mesh
    return (
        np.asarray(mesh.frequencies),
        np.asarray(mesh.weights),
        [int(x) for x in mesh.mesh_numbers],
    )


def _dft_harmonic_forces(force_set: ForceSet) -> np.ndarray:
    forces = force_set.harmonic_forces()
    if force_set.reference_forces is not None:
        forces = forces - force_set.reference_forces[None]
    return forces


def dft_frequencies(force_set: ForceSet) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """DFT frequencies of a set by the protocol (cached in ``force_set.metadata``)."""
    key = ("_dft_frequencies", MESH_LENGTH)
    cache = force_set.metadata.setdefault("_cache", {})
    if key not in cache:
        cache[key] = frequencies_from_forces(force_set, _dft_harmonic_forces(force_set))
    return cache[key]


def evaluate_force_set(
    force_set: ForceSet, calculator: ForceCalculator, progress: bool = False
) -> CompoundEvaluation:
    """Frequency and force errors of a potential on one DFT force set (see module docstring).

    Parameters
    ----------
    force_set : ForceSet
    calculator : ForceCalculator
        The potential.
    progress : bool
        Progress bar over the supercells.

    Returns
    -------
    CompoundEvaluation
    """
    structures = [force_set.reference] + [
        force_set.supercells[i] for i in force_set.harmonic_indices
    ]
    before = calculator.n_force_evaluations
    _, forces = calculator.compute(structures, progress=progress)
    n_evals = calculator.n_force_evaluations - before
    model_forces = forces[1:] - forces[0][None]
    dft_forces = _dft_harmonic_forces(force_set)
    freq_dft, weights, mesh = dft_frequencies(force_set)
    freq_model, _, _ = frequencies_from_forces(force_set, model_forces)
    per_q = np.abs(freq_model - freq_dft).mean(axis=1)
    mean_error = np.average((freq_model - freq_dft).mean(axis=1), weights=weights)
    return CompoundEvaluation(
        name=force_set.name,
        frequency_mae_thz=float(np.average(per_q, weights=weights)),
        force_mae_ev_per_angstrom=float(np.abs(model_forces - dft_forces).mean()),
        n_supercells=len(force_set.harmonic_indices),
        n_force_evaluations=int(n_evals),
        mesh=mesh,
        dft_min_frequency_thz=float(freq_dft.min()),
        model_min_frequency_thz=float(freq_model.min()),
        frequency_mean_error_thz=float(mean_error),
        frequency_scale=best_frequency_scale(freq_model, freq_dft, weights),
        model_frequencies=freq_model,
    )


def evaluate(
    force_sets: Sequence[ForceSet], calculator: ForceCalculator, progress: bool = False
) -> EvaluationResult:
    """Evaluate a potential on several DFT force sets.

    Parameters
    ----------
    force_sets : sequence of ForceSet
    calculator : ForceCalculator
    progress : bool
        Progress bar over the compounds.

    Returns
    -------
    EvaluationResult
    """
    if not force_sets:
        raise ValueError("no force sets to evaluate")
    calculator.check_elements({e for s in force_sets for e in s.elements})
    items = list(force_sets)
    if progress:
        from tqdm.auto import tqdm

        items = tqdm(items, desc="evaluate", unit="compound")
    return EvaluationResult(
        compounds=[evaluate_force_set(s, calculator) for s in items], model=calculator.name
    )
