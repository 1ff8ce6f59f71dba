"""jobflow jobs of the SSCHA workflow.

* :func:`relax_job`: atomate2's ``ForceFieldRelaxMaker`` driven by tdphonon's potential.
* :func:`harmonic_job`: harmonic phonons (finite displacements, or force constants of an
  atomate2 ``PhononBSDOSDoc``) -> :class:`~tdphonon.schemas.HarmonicPhononDoc`.
* :func:`sscha_iteration_job`: **one** SSCHA iteration. Unless the iterations must stop,
  it outputs an :class:`~tdphonon.schemas.SSCHAIterationDoc` and replaces itself by the
  next iteration (same uuid, index + 1); the last iteration outputs the
  :class:`~tdphonon.schemas.SSCHATemperatureDoc`.

How the SSCHA state travels between iteration jobs
--------------------------------------------------
An iteration's new snapshots (displacements, forces, energies, sampling force constants)
and its updated force constants are part of its output document and go to the JobStore's
``"data"`` store. The next job receives only a :class:`~tdphonon.schemas.SSCHAContinuation`:
``(uuid, index)`` pointers to the outputs that hold the still-active populations and the
current force constants, plus scalars and the history. It loads the arrays through the
store jobflow hands to the running job (``CURRENT_JOB.store``). Job inputs, and hence
FireWorks specs in MongoDB, stay a few kB whatever the supercell and sample size.

Random numbers come from streams derived from (seed, temperature, population index) inside
:class:`~tdphonon.sscha.SSCHA`, and the pointers name fixed ``(uuid, index)`` outputs, so a
failed iteration job that is rerun recomputes exactly that iteration and nothing else.

Calculators (:func:`get_force_calculator`) and the symmetry basis of the force-constant fit
are cached per process: consecutive iteration jobs on one worker rebuild neither.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import CURRENT_JOB, Job, JobConfig, Response, job
from pymatgen.core import Lattice, Structure
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.dos import PhononDos

from tdphonon import __version__
from tdphonon.fitting import ForceConstantFitter
from tdphonon.harmonic import harmonic_force_constants
from tdphonon.jobs.common import field_value, get_force_calculator, progress_enabled
from tdphonon.phonons import IMAGINARY_TOLERANCE, labelled_qpoints, phonon_spectrum
from tdphonon.potentials import NonFiniteForcesError
from tdphonon.schemas import (
    HarmonicPhononDoc,
    JobFailureDoc,
    PopulationDoc,
    PopulationPointer,
    SSCHAContinuation,
    SSCHAIterationDoc,
    SSCHATemperatureDoc,
    StoredOutput,
)
from tdphonon.sscha import (
    SSCHA,
    IterationRecord,
    Population,
    SSCHAResult,
    SSCHASettings,
    SSCHAState,
    supercell_atoms,
)
from tdphonon.structures import (
    StructureError,
    choose_supercell_matrix,
    make_phonopy,
    primitive_nac_params,
    standard_primitive,
)

if TYPE_CHECKING:
    from jobflow import JobStore
    from numpy.typing import ArrayLike, NDArray
    from phonopy import Phonopy


__all__ = [
    "MATERIAL_FAILURES",
    "SSCHADivergenceError",
    "harmonic_job",
    "phonon_doc_force_constants",
    "relax_job",
    "sscha_iteration_job",
]

logger = logging.getLogger(__name__)

#: Output keys and classes that go to the JobStore's additional "data" store.
HARMONIC_DATA = [
    "force_constants",
    "displacements",
    "forces",
    "reference_forces",
    PhononBandStructureSymmLine,
    PhononDos,
]
SSCHA_DATA = [
    "force_constants",
    "displacements",
    "forces",
    "energies",
    "sampling_force_constants",
    PhononBandStructureSymmLine,
    PhononDos,
]
_POPULATION_KEYS = ["displacements", "forces", "energies", "sampling_force_constants"]


class SSCHADivergenceError(RuntimeError):
    """The SSCHA iterations produced non-finite force constants or frequencies."""


#: Failures that belong to the material or the potential, not to the machinery: the jobs
#: store a :class:`~tdphonon.schemas.JobFailureDoc` with the reason and stop their
#: children instead of raising, so that a campaign's other materials go on and the
#: reason is queryable. Anything else (store unreachable, a bug) still raises, and the
#: FireWork fizzles and can be rerun.
MATERIAL_FAILURES: tuple[type[BaseException], ...] = (
    NonFiniteForcesError,
    SSCHADivergenceError,
    StructureError,
    np.linalg.LinAlgError,
    FloatingPointError,
)


def _failure_response(
    stage: str,
    error: BaseException,
    structure: Structure | None = None,
    temperature: float | None = None,
    iteration: int | None = None,
    model: str | None = None,
) -> Response:
    """Output a :class:`JobFailureDoc` for ``error`` and stop the children of this job."""
    reason = " ".join(str(error).split()) or type(error).__name__
    formula = structure.composition.reduced_formula if structure is not None else None
    where = f"{stage}" + (f" at {temperature:g} K" if temperature is not None else "")
    logger.warning("%s of %s failed: %s: %s", where, formula, type(error).__name__, reason)
    doc = JobFailureDoc(
        stage=stage,
        temperature=temperature,
        iteration=iteration,
        error_type=type(error).__name__,
        reason=reason[:2000],
        formula=formula,
        provenance={"model": model, "tdphonon_version": __version__},
    )
    return Response(output=doc, stop_children=True)


# -- cached fitting basis -----------------------------------------------------------------------


@lru_cache(maxsize=2)
def _cached_fitter(structure_json: str, supercell_matrix: tuple) -> ForceConstantFitter:
    phonon = make_phonopy(Structure.from_str(structure_json, fmt="json"), supercell_matrix)
    return ForceConstantFitter(phonon.supercell)


# -- relaxation ---------------------------------------------------------------------------------


def relax_job(
    structure: Structure,
    model: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    fmax: float = 1e-3,
    relax_cell: bool = True,
    steps: int = 1000,
) -> Job:
    """Symmetry-preserving relaxation with tdphonon's potential, as an atomate2 job.

    atomate2's ``ForceFieldRelaxMaker`` accepts any ASE calculator through a
    ``calculator_meta`` dict naming a callable (``force_field_name={"@module": ...,
    "@callable": ...}``) with ``calculator_kwargs``. Pointing it at :func:`ase_calculator`
    gives it tdphonon's correctly loaded potential (legacy matgl weights fixed, cached per
    process), so the relaxation is atomate2's own job and output
    (``ForceFieldTaskDocument``, final structure in ``.structure``) rather than a
    tdphonon-specific one. ``FixSymmetry`` keeps the space group, so the standard primitive
    setting of the input survives.

    Parameters
    ----------
    structure : Structure
        Structure to relax (the standard primitive cell).
    model, device, batch_size
        Potential, see :func:`get_force_calculator`.
    fmax : float
        Force (and stress, through the cell filter) criterion, eV/Å.
    relax_cell : bool
        Relax the lattice too.
    steps : int
        Maximum optimiser steps.

    Returns
    -------
    Job
        atomate2 force-field relaxation job.
    """
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker
    from jobflow import OutputReference

    if isinstance(model, OutputReference):
        # The Maker's settings are not job inputs, so jobflow would not resolve a reference
        # held there: make the atomate2 job once the model exists.
        job = relax_with_model_job(structure, model, device, batch_size, fmax, relax_cell, steps)
        job.name = "relax"
        return job
    maker = ForceFieldRelaxMaker(
        name="relax",
        force_field_name={"@module": "tdphonon.jobs.common", "@callable": "ase_calculator"},
        calculator_kwargs={
            "model": _model_argument(model),
            "device": device,
            "batch_size": batch_size,
        },
        relax_cell=relax_cell,
        fix_symmetry=True,
        symprec=1e-3,
        steps=steps,
        optimizer_kwargs={"optimizer": "BFGS"},
        relax_kwargs={"fmax": fmax, "final_atoms_object_file": None},
    )
    return maker.make(structure)


def _model_argument(model: Any) -> str | None:
    """A model as a plain string for atomate2's calculator kwargs (stored models as URIs)."""
    from tdphonon.jobs.finetune import as_stored_model

    stored = as_stored_model(model) if model is not None else None
    if stored is not None:
        return stored.uri
    return None if model is None else str(model)


@job(config=JobConfig(expose_store=True))
def relax_with_model_job(
    structure: Structure,
    model: Any,
    device: str,
    batch_size: int,
    fmax: float,
    relax_cell: bool,
    steps: int,
) -> Response:
    """:func:`relax_job` for a model that is the output of an earlier job (fine-tuning).

    Fetches the model (into the local model cache, checked against its hash) and replaces
    itself by atomate2's relaxation job with it.
    """
    get_force_calculator(model, device, batch_size)
    return Response(
        replace=relax_job(
            structure, _model_argument(model), device, batch_size, fmax, relax_cell, steps
        )
    )


# -- harmonic phonons ---------------------------------------------------------------------------


def _match_atoms(
    ours: NDArray[np.float64],
    numbers: NDArray[np.int_],
    theirs: NDArray[np.float64],
    their_numbers: NDArray[np.int_],
    lattice: NDArray[np.float64],
    tolerance: float,
) -> NDArray[np.int_] | None:
    """Index in ``ours`` of each atom of ``theirs`` (Cartesian, same cell) up to a shift."""
    inverse = np.linalg.inv(lattice)
    f_ours, f_theirs = ours @ inverse, theirs @ inverse
    n = len(ours)
    for k in np.flatnonzero(numbers == their_numbers[0]):
        diff = f_theirs[:, None, :] + (f_ours[k] - f_theirs[0]) - f_ours[None, :, :]
        diff -= np.round(diff)
        distance = np.linalg.norm(diff @ lattice, axis=-1)
        match = distance.argmin(axis=1)
        if (
            distance[np.arange(n), match].max() < tolerance
            and len(set(match.tolist())) == n
            and np.array_equal(numbers[match], their_numbers)
        ):
            return match
    return None


def phonon_doc_force_constants(
    phonon_doc: Any, tolerance: float = 0.05
) -> tuple[Structure, NDArray[np.int_], NDArray[np.float64]]:
    """Force constants of an atomate2 ``PhononBSDOSDoc`` in tdphonon's setting.

    atomate2 stores full force constants of the phonopy supercell of
    ``(doc.structure, doc.supercell_matrix)`` (phonopy convention), in the Cartesian frame
    and atom order of that structure, which may be a conventional or rotated cell.
    tdphonon works on the standard primitive cell: this finds the supercell of the
    standard primitive that is the same crystal (lattice mapping with rotation, then atoms
    up to a translation) and rotates and reorders the force constants onto it.

    Parameters
    ----------
    phonon_doc : PhononBSDOSDoc or dict
        Needs ``structure``, ``supercell_matrix`` and ``force_constants`` (atomate2's
        ``store_force_constants=True``, the default).
    tolerance : float
        Largest atomic position mismatch accepted, Å.

    Returns
    -------
    structure : Structure
        Standard primitive cell.
    supercell_matrix : ndarray, shape (3, 3)
        Its supercell matrix (phonopy convention, as :func:`~tdphonon.structures.make_phonopy`).
    force_constants : ndarray, shape (N, N, 3, 3)
        Full force constants of that supercell, eV/Å².
    """
    structure = field_value(phonon_doc, "structure")
    matrix = field_value(phonon_doc, "supercell_matrix")
    force_constants = field_value(phonon_doc, "force_constants")
    if structure is None or matrix is None or force_constants is None:
        raise ValueError(
            "the phonon document needs structure, supercell_matrix and force_constants "
            "(atomate2 PhononMaker with store_force_constants=True)"
        )
    if isinstance(structure, dict):
        structure = Structure.from_dict(structure)
    if not isinstance(force_constants, (list, np.ndarray)):  # atomate2 ForceConstants
        force_constants = field_value(force_constants, "force_constants")
    force_constants = np.asarray(force_constants, dtype=float)
    theirs = make_phonopy(structure, matrix).supercell
    n_atoms = len(theirs)
    if force_constants.shape != (n_atoms, n_atoms, 3, 3):
        raise ValueError(
            f"force constants of shape {force_constants.shape} do not match the "
            f"{n_atoms}-atom supercell: full supercell force constants are needed"
        )
    primitive = standard_primitive(structure)
    mappings = primitive.lattice.find_all_mappings(Lattice(theirs.cell), ltol=1e-3, atol=0.5)
    # the least rotated candidate first: an unrotated cell keeps its frame and matrix
    for aligned, rotation, scale in sorted(
        mappings, key=lambda m: float(np.linalg.norm(m[1] - np.eye(3)))
    ):
        if np.linalg.det(scale) < 0:
            continue
        # rows: doc frame = our frame @ rotation; orthogonalise against round-off
        u, _, vt = np.linalg.svd(rotation)
        rotation = u @ vt
        supercell_matrix = np.round(scale).astype(int).T  # pymatgen rows -> phonopy columns
        ours = make_phonopy(primitive, supercell_matrix).supercell
        if not np.allclose(ours.cell, aligned.matrix, atol=1e-3 * np.abs(aligned.matrix).max()):
            continue
        match = _match_atoms(
            ours.positions,
            ours.numbers,
            theirs.positions @ rotation.T,
            theirs.numbers,
            ours.cell,
            tolerance,
        )
        if match is None:
            continue
        result = np.empty_like(force_constants)
        result[np.ix_(match, match)] = np.einsum(
            "ab,ijbc,dc->ijad", rotation, force_constants, rotation
        )
        return primitive, supercell_matrix, result
    raise StructureError(
        "could not map the supercell of the phonon document of "
        f"{structure.composition.reduced_formula} onto a supercell of its standard primitive cell"
    )


@job(data=HARMONIC_DATA)
def harmonic_job(
    structure: Structure | None = None,
    model: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    supercell_matrix: ArrayLike | None = None,
    min_length: float = 10.0,
    displacement: float = 0.01,
    phonon_doc: Any = None,
    nac_params: dict[str, Any] | None = None,
) -> HarmonicPhononDoc:
    """Harmonic phonons of the standard primitive cell with the potential.

    Either finite displacements of ``structure`` (symfc fit), or the force constants of an
    atomate2 ``phonon_doc`` (see :func:`phonon_doc_force_constants`), in which case only
    the undisplaced supercell is evaluated (its energy and forces are the SSCHA reference).

    Parameters
    ----------
    structure : Structure, optional
        Crystal (made standard primitive here); not used with ``phonon_doc``.
    model, device, batch_size
        Potential, see :func:`get_force_calculator`.
    supercell_matrix : array-like, optional
        Supercell of the standard primitive cell; chosen from ``min_length`` if None.
    min_length : float
        Minimum distance between periodic images in the supercell, Å.
    displacement : float
        Finite displacement, Å.
    phonon_doc : PhononBSDOSDoc or dict, optional
        Previous atomate2 phonon result to take the force constants from.
    nac_params : dict, optional
        Born effective charges per site of ``structure`` (of the structure of
        ``phonon_doc``), dielectric tensor and optional unit factor
        (:func:`tdphonon.structures.read_born`): the non-analytical term correction
        (LO-TO splitting) of the band structure, DOS and labelled frequencies.

    Returns
    -------
    HarmonicPhononDoc or Response
        The harmonic phonons; on a failure of the material or the potential
        (:data:`MATERIAL_FAILURES`, e.g. NaN forces), a ``Response`` whose output is a
        :class:`~tdphonon.schemas.JobFailureDoc` and that stops the SSCHA jobs.
    """
    try:
        return _harmonic_doc(
            structure,
            model,
            device,
            batch_size,
            supercell_matrix,
            min_length,
            displacement,
            phonon_doc,
            nac_params,
        )
    except MATERIAL_FAILURES as error:
        if structure is None and phonon_doc is not None:
            structure = field_value(phonon_doc, "structure")
            if isinstance(structure, dict):
                structure = Structure.from_dict(structure)
        return _failure_response("harmonic", error, structure, model=model)


def _harmonic_doc(
    structure: Structure | None,
    model: str | None,
    device: str,
    batch_size: int,
    supercell_matrix: ArrayLike | None,
    min_length: float,
    displacement: float,
    phonon_doc: Any,
    nac_params: dict[str, Any] | None = None,
) -> HarmonicPhononDoc:
    """Body of :func:`harmonic_job` (same parameters)."""
    calculator = get_force_calculator(model, device, batch_size)
    if phonon_doc is not None:
        if nac_params is not None:
            doc_structure = field_value(phonon_doc, "structure")
            if isinstance(doc_structure, dict):
                doc_structure = Structure.from_dict(doc_structure)
            nac_params = primitive_nac_params(doc_structure, nac_params)
        primitive, matrix, force_constants = phonon_doc_force_constants(phonon_doc)
        phonon = make_phonopy(primitive, matrix)
        calculator.check_elements(primitive.symbol_set)
        energies, forces = calculator.compute(supercell_atoms(phonon))
        displacements = displaced_forces = None
        reference_energy, reference_forces = float(energies[0]), forces[0]
        n_evaluations = 1
        settings = {"supercell_matrix": matrix.tolist()}
        source = "atomate2 PhononBSDOSDoc"
    else:
        if structure is None:
            raise ValueError("harmonic_job needs a structure or a phonon_doc")
        primitive = standard_primitive(structure)
        if nac_params is not None:
            nac_params = primitive_nac_params(structure, nac_params)
        calculator.check_elements(primitive.symbol_set)
        if supercell_matrix is None:
            supercell_matrix = choose_supercell_matrix(primitive, min_length)
            settings = {"min_length": min_length}
        else:
            settings = {"min_length": None}
        phonon = make_phonopy(primitive, supercell_matrix)
        matrix = np.asarray(phonon.supercell_matrix, dtype=int)
        result = harmonic_force_constants(
            phonon, calculator, displacement, progress=progress_enabled()
        )
        force_constants = result.force_constants
        displacements, displaced_forces = result.displacements, result.forces
        reference_energy, reference_forces = result.reference_energy, result.reference_forces
        n_evaluations = result.n_force_evaluations
        settings.update(supercell_matrix=matrix.tolist(), displacement=displacement)
        source = "finite displacements"
    if nac_params is not None:  # NAC for the spectrum only
        phonon = make_phonopy(primitive, matrix, nac_params=nac_params)
    spectrum = phonon_spectrum(phonon, force_constants)
    logger.info(
        "harmonic phonons of %s: %d-atom supercell, min frequency %.3f THz",
        primitive.composition.reduced_formula,
        len(phonon.supercell),
        spectrum.min_frequency,
    )
    return HarmonicPhononDoc(
        structure=primitive,
        supercell_matrix=matrix.tolist(),
        n_supercell_atoms=len(phonon.supercell),
        force_constants=force_constants,
        displacements=displacements,
        forces=displaced_forces,
        reference_energy=reference_energy,
        reference_forces=reference_forces,
        band_structure=spectrum.band_structure,
        dos=spectrum.dos,
        labelled_frequencies=spectrum.labelled_frequencies,
        min_frequency=spectrum.min_frequency,
        min_frequency_excluding_acoustic_pockets=spectrum.min_frequency_excluding_acoustic_pockets,
        acoustic_pockets=spectrum.acoustic_pockets,
        has_imaginary_modes=spectrum.has_imaginary_modes,
        nac_params=nac_params,
        n_force_evaluations=n_evaluations,
        provenance={
            "model": calculator.provenance(),
            "settings": settings,
            "source": source,
            "tdphonon_version": __version__,
        },
    )


# -- SSCHA iterations ---------------------------------------------------------------------------


def _load_output(store: JobStore, pointer: StoredOutput, field: str, keys: list[str]) -> Any:
    """``output.<field>`` of a stored job output (raw), with the named arrays loaded."""
    doc = store.query_one(
        {"uuid": pointer.uuid, "index": pointer.index},
        properties=[f"output.{field}"],
        load={"data": keys},
    )
    if doc is None or doc.get("output", {}).get(field) is None:
        raise RuntimeError(
            f"output.{field} of job {pointer.uuid} (index {pointer.index}) is not in the store"
        )
    return doc["output"][field]


def _load_state(store: JobStore, continuation: SSCHAContinuation) -> SSCHAState:
    """Rebuild the SSCHA state from the arrays stored by earlier iterations."""
    populations = []
    for pointer in continuation.populations:
        data = _load_output(store, pointer, "population", _POPULATION_KEYS)
        if data["index"] != pointer.population_index:
            raise RuntimeError(f"population {pointer.population_index} not found at {pointer}")
        populations.append(
            Population(
                displacements=np.asarray(data["displacements"], dtype=float),
                forces=np.asarray(data["forces"], dtype=float),
                energies=np.asarray(data["energies"], dtype=float),
                sampling_force_constants=np.asarray(data["sampling_force_constants"], dtype=float),
                index=data["index"],
            )
        )
    force_constants = _load_output(
        store, continuation.force_constants, "force_constants", ["force_constants"]
    )
    return SSCHAState(
        force_constants=np.asarray(force_constants, dtype=float),
        populations=populations,
        n_target_snapshots=continuation.n_target_snapshots,
        n_populations_drawn=continuation.n_populations_drawn,
        history=[IterationRecord(**record) for record in continuation.history],
    )


def _frequency_shifts(
    frequencies: dict[str, list[float]], harmonic: dict[str, list[float]]
) -> tuple[dict[str, list[float]], float]:
    shifts, kept = {}, []
    for label, values in frequencies.items():
        if label not in harmonic:
            continue
        reference = np.asarray(harmonic[label])
        shift = np.asarray(values) - reference
        shifts[label] = shift.tolist()
        kept.extend(shift[np.abs(reference) > abs(IMAGINARY_TOLERANCE)].tolist())
    return shifts, float(np.mean(kept)) if kept else 0.0


def _temperature_doc(
    phonon: Phonopy,
    structure: Structure,
    supercell_matrix: list[list[int]],
    result: SSCHAResult,
    final_iteration: SSCHAIterationDoc,
    harmonic_labelled_frequencies: dict[str, list[float]],
    harmonic_has_imaginary_modes: bool,
    warm_start: str,
    model_provenance: dict[str, Any],
    nac_params: dict[str, Any] | None = None,
) -> SSCHATemperatureDoc:
    if nac_params is not None:  # NAC for the spectrum only, not for the SSCHA itself
        phonon = make_phonopy(structure, supercell_matrix, nac_params=nac_params)
    spectrum = phonon_spectrum(phonon, result.force_constants)
    # the SSCHA bounded the errors at the labelled q-points, in the same (ascending) order
    labelled_errors = {
        label: errors.tolist()
        for label, errors in zip(
            labelled_qpoints(structure), result.qpoint_frequency_errors, strict=True
        )
        if label in spectrum.labelled_frequencies
    }
    shifts, mean_shift = _frequency_shifts(
        spectrum.labelled_frequencies, harmonic_labelled_frequencies
    )
    return SSCHATemperatureDoc(
        temperature=result.temperature,
        statistics=result.settings.statistics,
        structure=structure,
        supercell_matrix=supercell_matrix,
        force_constants=result.force_constants,
        band_structure=spectrum.band_structure,
        dos=spectrum.dos,
        labelled_frequencies=spectrum.labelled_frequencies,
        labelled_frequency_errors=labelled_errors,
        harmonic_labelled_frequencies=harmonic_labelled_frequencies,
        frequency_shifts=shifts,
        mean_frequency_shift=mean_shift,
        min_frequency=spectrum.min_frequency,
        min_frequency_excluding_acoustic_pockets=spectrum.min_frequency_excluding_acoustic_pockets,
        acoustic_pockets=spectrum.acoustic_pockets,
        nac=nac_params is not None,
        commensurate_frequencies=result.frequencies,
        commensurate_frequency_errors=result.frequency_errors,
        free_energy=result.free_energy,
        free_energy_error=result.free_energy_error,
        free_energy_note=result.free_energy_note,
        has_imaginary_modes=spectrum.has_imaginary_modes,
        harmonic_has_imaginary_modes=harmonic_has_imaginary_modes,
        stabilised=harmonic_has_imaginary_modes and not spectrum.has_imaginary_modes,
        converged=result.converged,
        message=result.message,
        n_force_evaluations=result.n_force_evaluations,
        n_iterations=result.n_iterations,
        history=[dataclasses.asdict(record) for record in result.history],
        warm_start=warm_start,
        final_iteration=final_iteration,
        provenance={
            "model": model_provenance,
            "seed": result.settings.seed,
            "settings": dataclasses.asdict(result.settings),
            "tdphonon_version": __version__,
        },
    )


@job(data=SSCHA_DATA, config=JobConfig(expose_store=True))
def sscha_iteration_job(
    structure: Structure,
    supercell_matrix: list[list[int]],
    temperature: float,
    reference_energy: float,
    reference_forces: ArrayLike,
    harmonic_labelled_frequencies: dict[str, list[float]],
    harmonic_has_imaginary_modes: bool,
    start_force_constants: ArrayLike | None = None,
    continuation: SSCHAContinuation | None = None,
    warm_start: str = "harmonic",
    model: str | None = None,
    device: str = "auto",
    batch_size: int = 16,
    sscha_settings: dict[str, Any] | None = None,
    nac_params: dict[str, Any] | None = None,
) -> Response | SSCHATemperatureDoc:
    """One SSCHA iteration; replaces itself by the next until the iterations stop.

    Parameters
    ----------
    structure : Structure
        Standard primitive cell (of the harmonic document).
    supercell_matrix : list of list of int
        Its supercell matrix.
    temperature : float
        Temperature, K.
    reference_energy : float
        Energy of the undisplaced supercell, eV.
    reference_forces : array-like, shape (N, 3)
        Its forces, eV/Å.
    harmonic_labelled_frequencies : dict
        Harmonic frequencies at the labelled points, THz (for the shifts).
    harmonic_has_imaginary_modes : bool
        Whether the harmonic phonons are unstable (for ``stabilised``).
    start_force_constants : array-like, optional
        Starting force constants (first iteration only), eV/Å².
    continuation : SSCHAContinuation, optional
        State left by the previous iteration (all later iterations).
    warm_start : str
        Where ``start_force_constants`` came from, recorded in the result.
    model, device, batch_size
        Potential, see :func:`get_force_calculator`.
    sscha_settings : dict, optional
        Keyword arguments of :class:`~tdphonon.sscha.SSCHASettings`.
    nac_params : dict, optional
        NAC parameters per site of ``structure`` (the harmonic document's ``nac_params``):
        LO-TO splitting in the final band structure, DOS and labelled frequencies. The
        SSCHA itself works on commensurate modes, where they do not enter.

    Returns
    -------
    Response or SSCHATemperatureDoc
        ``Response(output=SSCHAIterationDoc, replace=next iteration)`` or the final result;
        on a failure of the material or the potential (:data:`MATERIAL_FAILURES`: NaN
        forces, a diverging SSCHA), ``Response(output=JobFailureDoc, stop_children=True)``:
        the reason is stored and the later temperatures of this material are not run.
    """
    if (start_force_constants is None) == (continuation is None):
        raise ValueError("give either start_force_constants (first iteration) or continuation")
    try:
        return _sscha_iteration(
            structure,
            supercell_matrix,
            temperature,
            reference_energy,
            reference_forces,
            harmonic_labelled_frequencies,
            harmonic_has_imaginary_modes,
            start_force_constants,
            continuation,
            warm_start,
            model,
            device,
            batch_size,
            sscha_settings,
            nac_params,
        )
    except MATERIAL_FAILURES as error:
        iteration = 1 if continuation is None else len(continuation.history) + 1
        return _failure_response("sscha", error, structure, temperature, iteration, model)


def _sscha_iteration(
    structure: Structure,
    supercell_matrix: list[list[int]],
    temperature: float,
    reference_energy: float,
    reference_forces: ArrayLike,
    harmonic_labelled_frequencies: dict[str, list[float]],
    harmonic_has_imaginary_modes: bool,
    start_force_constants: ArrayLike | None,
    continuation: SSCHAContinuation | None,
    warm_start: str,
    model: str | None,
    device: str,
    batch_size: int,
    sscha_settings: dict[str, Any] | None,
    nac_params: dict[str, Any] | None = None,
) -> Response | SSCHATemperatureDoc:
    """Body of :func:`sscha_iteration_job` (same parameters)."""
    settings = SSCHASettings(**(sscha_settings or {}))
    calculator = get_force_calculator(model, device, batch_size)
    phonon = make_phonopy(structure, supercell_matrix)
    this = StoredOutput(uuid=CURRENT_JOB.job.uuid, index=CURRENT_JOB.job.index)
    if continuation is None:
        phonon.force_constants = np.asarray(start_force_constants, dtype=float)
        state, pointers = None, {}
    else:
        state = _load_state(CURRENT_JOB.store, continuation)
        phonon.force_constants = state.force_constants
        pointers = {p.population_index: p for p in continuation.populations}
    sscha = SSCHA(
        phonon,
        calculator,
        temperature,
        settings,
        reference=(float(reference_energy), np.asarray(reference_forces, dtype=float)),
        state=state,
        fitter=_cached_fitter(  # symfc basis, reused by later iterations on this worker
            structure.to_json(), tuple(map(tuple, np.asarray(supercell_matrix).tolist()))
        ),
        qpoints=list(labelled_qpoints(structure).values()),  # their errors are bounded too
    )
    record = sscha.step(progress=progress_enabled())
    state = sscha.state
    if not (
        np.isfinite([record.frequency_change, record.frequency_error, record.min_frequency]).all()
        and np.isfinite(state.force_constants).all()
    ):
        raise SSCHADivergenceError(
            f"SSCHA iteration {record.iteration} at {temperature:g} K gave non-finite "
            f"frequencies or force constants (change {record.frequency_change} THz)"
        )
    logger.info(
        "SSCHA %g K iteration %d: change %.4f THz, error %.4f THz, %d new snapshots",
        temperature,
        record.iteration,
        record.frequency_change,
        record.frequency_error,
        record.n_new_snapshots,
    )

    population = None
    if record.n_new_snapshots:
        new = state.populations[-1]
        population = PopulationDoc(
            index=new.index,
            n_snapshots=len(new),
            displacements=new.displacements,
            forces=new.forces,
            energies=new.energies,
            sampling_force_constants=new.sampling_force_constants,
        )
        pointers[new.index] = PopulationPointer(**this.model_dump(), population_index=new.index)
    next_state = SSCHAContinuation(
        force_constants=this,
        populations=[pointers[p.index] for p in state.populations],
        n_target_snapshots=state.n_target_snapshots,
        n_populations_drawn=state.n_populations_drawn,
        history=[dataclasses.asdict(r) for r in state.history],
    )
    stop = sscha.stop_reason()
    iteration = SSCHAIterationDoc(
        temperature=temperature,
        **dataclasses.asdict(record),
        population=population,
        force_constants=state.force_constants if stop is None else None,
        continuation=next_state,
        stop_reason=stop,
    )
    if stop is None:
        following = sscha_iteration_job(
            structure=structure,
            supercell_matrix=supercell_matrix,
            temperature=temperature,
            reference_energy=reference_energy,
            reference_forces=np.asarray(reference_forces, dtype=float).tolist(),
            harmonic_labelled_frequencies=harmonic_labelled_frequencies,
            harmonic_has_imaginary_modes=harmonic_has_imaginary_modes,
            continuation=next_state,
            warm_start=warm_start,
            model=model,
            device=device,
            batch_size=batch_size,
            sscha_settings=sscha_settings,
            nac_params=nac_params,
        )
        following.name = f"sscha {temperature:g} K iteration {record.iteration + 1}"
        return Response(output=iteration, replace=following)

    logger.info("SSCHA %g K: %s after %d iterations", temperature, stop, record.iteration)
    return _temperature_doc(
        phonon,
        structure,
        supercell_matrix,
        sscha.result(),
        iteration,
        harmonic_labelled_frequencies,
        harmonic_has_imaginary_modes,
        warm_start,
        calculator.provenance(),
        nac_params,
    )
