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

Calculators (:meth:`~tdphonon.potentials.PotentialSpec.calculator`), the crystal's phonopy
object (its symmetry analysis) and the symmetry basis of the force-constant fit are cached
per process: consecutive iteration jobs on one worker rebuild none of them. The labelled
q-points of the band path, whose frequency errors the SSCHA bounds, are found once, by the
first iteration, and travel to the next ones in :class:`HarmonicReference`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from jobflow import CURRENT_JOB, Job, JobConfig, OutputReference, Response, job
from monty.json import MSONable
from pymatgen.core import Structure
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.dos import PhononDos

from tdphonon import __version__
from tdphonon.fitting import ForceConstantFitter
from tdphonon.harmonic import harmonic_force_constants
from tdphonon.jobs.common import field_value
from tdphonon.phonons import (
    frequency_shifts,
    labelled_qpoints,
    phonon_doc_force_constants,
    phonon_spectrum,
    renormalisation_measures,
)
from tdphonon.potentials import NonFiniteForcesError, PotentialSpec
from tdphonon.potentials.spec import is_output_reference
from tdphonon.schemas import (
    HarmonicPhononDoc,
    JobFailureDoc,
    PopulationDoc,
    PopulationPointer,
    SSCHAContinuation,
    SSCHAIterationDoc,
    SSCHATemperatureDoc,
    StoredOutput,
    as_array,
)
from tdphonon.sscha import (
    SSCHA,
    IterationRecord,
    Population,
    SSCHAResult,
    SSCHASettings,
    SSCHAState,
)
from tdphonon.structures import (
    StructureError,
    choose_supercell_matrix,
    make_phonopy,
    primitive_nac_params,
    standard_primitive,
    supercell_atoms,
)

if TYPE_CHECKING:
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker
    from jobflow import JobStore
    from numpy.typing import ArrayLike
    from phonopy import Phonopy


__all__ = [
    "MATERIAL_FAILURES",
    "HarmonicReference",
    "SSCHADivergenceError",
    "default_relax_maker",
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


@dataclass
class HarmonicReference(MSONable):
    """What every SSCHA iteration of a crystal takes from its harmonic job.

    The same for all temperatures and iterations; in a flow its fields are references to
    the harmonic job's output (:meth:`from_harmonic`), resolved when an iteration runs.

    Parameters
    ----------
    structure : Structure
        Standard primitive cell (of the harmonic document).
    supercell_matrix : list of list of int
        Its supercell matrix (phonopy convention).
    reference_energy : float
        Energy of the undisplaced supercell, eV.
    reference_forces : array-like, shape (N, 3)
        Its forces, eV/Å.
    labelled_frequencies : dict
        Harmonic frequencies at the labelled points, THz (for the shifts).
    has_imaginary_modes : bool
        Whether the harmonic phonons are unstable (for ``stabilised``).
    nac_params : dict, optional
        NAC parameters per site of ``structure`` (the harmonic document's ``nac_params``):
        LO-TO splitting in the final band structure, DOS and labelled frequencies. The
        SSCHA itself works on commensurate modes, where they do not enter.
    harmonic_uuid : str, optional
        uuid of the harmonic job (set by :meth:`from_harmonic` in a flow): the final
        iteration loads the harmonic force constants from the store by it, for the
        renormalisation measures, so that no array travels in the job inputs. None: the
        measures are not computed.
    labelled_qpoints : dict of str to list of float, optional
        The labelled points of the band path of ``structure`` (fractional q-points, in the
        order of :func:`~tdphonon.phonons.labelled_qpoints`). None: found by the first SSCHA
        iteration (:meth:`with_labelled_qpoints`), which passes them on to the next ones.
    """

    structure: Structure
    supercell_matrix: list[list[int]]
    reference_energy: float
    reference_forces: ArrayLike
    labelled_frequencies: dict[str, list[float]]
    has_imaginary_modes: bool
    nac_params: dict[str, Any] | None = None
    harmonic_uuid: str | None = None
    labelled_qpoints: dict[str, list[float]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.structure, dict):
            self.structure = Structure.from_dict(self.structure)

    @classmethod
    def from_harmonic(cls, harmonic: Any, nac: bool = True) -> HarmonicReference:
        """From a :class:`~tdphonon.schemas.HarmonicPhononDoc`, its dict or OutputReference.

        Parameters
        ----------
        harmonic : HarmonicPhononDoc, dict or OutputReference
            The harmonic job's output; an OutputReference also gives ``harmonic_uuid``.
        nac : bool
            Take its ``nac_params`` (else no NAC in the results).
        """
        own = ("nac_params", "harmonic_uuid", "labelled_qpoints")
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in own]
        values = {name: field_value(harmonic, name) for name in fields}
        return cls(
            **values,
            nac_params=field_value(harmonic, "nac_params") if nac else None,
            harmonic_uuid=harmonic.uuid if isinstance(harmonic, OutputReference) else None,
        )

    def compact(self) -> HarmonicReference:
        """The same with the forces as nested lists (small, JSON-ready job inputs)."""
        forces = np.asarray(self.reference_forces, dtype=float).tolist()
        return dataclasses.replace(self, reference_forces=forces)

    def with_labelled_qpoints(self) -> HarmonicReference:
        """The same with :attr:`labelled_qpoints` found (pymatgen's k-path of the structure)."""
        if self.labelled_qpoints is not None:
            return self
        qpoints = {label: q.tolist() for label, q in labelled_qpoints(self.structure).items()}
        return dataclasses.replace(self, labelled_qpoints=qpoints)


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


# -- cached symmetry analysis and fitting basis -------------------------------------------------


@lru_cache(maxsize=2)
def _cached_supercell(
    structure_json: str, supercell_matrix: tuple
) -> tuple[Phonopy, ForceConstantFitter]:
    """The phonopy object (no force constants) and symfc basis of a crystal's supercell.

    Built once per process (the symmetry analyses cost more than anything else an
    iteration does besides its forces) and shared by the iteration jobs that run there,
    which must not modify the phonopy object (:class:`~tdphonon.sscha.SSCHA` does not).
    """
    phonon = make_phonopy(Structure.from_str(structure_json, fmt="json"), supercell_matrix)
    return phonon, ForceConstantFitter(phonon.supercell)


# -- relaxation ---------------------------------------------------------------------------------


def default_relax_maker() -> ForceFieldRelaxMaker:
    """The relaxation before the phonons: atomate2's force-field relaxation, space group kept.

    ``FixSymmetry`` (symprec 1e-3 Å) keeps the standard primitive setting of the input; the
    cell relaxes too; BFGS to forces (and stresses, through the cell filter) below 1e-3 eV/Å,
    at most 1000 steps. :func:`relax_job` sets its potential.
    """
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

    return ForceFieldRelaxMaker(
        name="relax",
        relax_cell=True,
        fix_symmetry=True,
        symprec=1e-3,
        steps=1000,
        optimizer_kwargs={"optimizer": "BFGS"},
        relax_kwargs={"fmax": 1e-3, "final_atoms_object_file": None},
    )


def relax_job(
    structure: Structure,
    potential: PotentialSpec | None = None,
    maker: ForceFieldRelaxMaker | None = None,
) -> Job:
    """Relaxation with tdphonon's potential, as atomate2's own job.

    atomate2's ``ForceFieldRelaxMaker`` accepts any ASE calculator through a
    ``force_field_name`` dict naming a callable (``{"@module": ..., "@callable": ...}``)
    with ``calculator_kwargs``. Pointing it at :func:`tdphonon.potentials.ase_calculator`
    (with the fields of ``potential``) gives it tdphonon's correctly loaded potential
    (legacy matgl weights fixed, cached per process), so the relaxation is atomate2's own
    job and output (``ForceFieldTaskDocument``, final structure in ``.structure``).

    Parameters
    ----------
    structure : Structure
        Structure to relax (the standard primitive cell).
    potential : PotentialSpec, optional
        The potential (resolved, see :meth:`PotentialSpec.resolve`); default:
        :func:`~tdphonon.potentials.default_model` on the worker.
    maker : ForceFieldRelaxMaker, optional
        Its settings (criterion, steps, cell, symmetry); its force field is replaced by
        ``potential``. Default: :func:`default_relax_maker`.

    Returns
    -------
    Job
        atomate2 force-field relaxation job.
    """
    potential = potential or PotentialSpec()
    maker = maker or default_relax_maker()
    if is_output_reference(potential.model):
        # The Maker's settings are not job inputs, so jobflow would not resolve a reference
        # held there: make the atomate2 job once the model exists.
        job = relax_with_model_job(structure, potential, maker)
        job.name = maker.name
        return job
    maker = dataclasses.replace(
        maker,
        force_field_name={"@module": "tdphonon.potentials", "@callable": "ase_calculator"},
        calculator_kwargs={
            "model": potential.model_string(),
            "device": potential.device,
            "batch_size": potential.batch_size,
        },
    )
    return maker.make(structure)


@job(config=JobConfig(expose_store=True))
def relax_with_model_job(
    structure: Structure, potential: PotentialSpec, maker: ForceFieldRelaxMaker
) -> Response:
    """:func:`relax_job` for a model that is the output of an earlier job (fine-tuning).

    Fetches the model (into the local model cache, checked against its hash) and replaces
    itself by atomate2's relaxation job with it.
    """
    potential.calculator()
    potential = dataclasses.replace(potential, model=potential.model_string())
    return Response(replace=relax_job(structure, potential, maker))


# -- harmonic phonons ---------------------------------------------------------------------------


@job(data=HARMONIC_DATA)
def harmonic_job(
    structure: Structure | None = None,
    potential: PotentialSpec | None = None,
    supercell_matrix: ArrayLike | None = None,
    min_length: float = 10.0,
    displacement: float = 0.01,
    phonon_doc: Any = None,
    nac_params: dict[str, Any] | None = None,
    progress: bool = False,
) -> HarmonicPhononDoc:
    """Harmonic phonons of the standard primitive cell with the potential.

    Either finite displacements of ``structure`` (symfc fit), or the force constants of an
    atomate2 ``phonon_doc`` (see :func:`~tdphonon.phonons.phonon_doc_force_constants`), in
    which case only the undisplaced supercell is evaluated (its energy and forces are the
    SSCHA reference).

    Parameters
    ----------
    structure : Structure, optional
        Crystal (made standard primitive here); not used with ``phonon_doc``.
    potential : PotentialSpec, optional
        The potential (:meth:`PotentialSpec.calculator`); default:
        :func:`~tdphonon.potentials.default_model`.
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
    progress : bool
        Show a progress bar of the force evaluations.

    Returns
    -------
    HarmonicPhononDoc or Response
        The harmonic phonons; on a failure of the material or the potential
        (:data:`MATERIAL_FAILURES`, e.g. NaN forces), a ``Response`` whose output is a
        :class:`~tdphonon.schemas.JobFailureDoc` and that stops the SSCHA jobs.
    """
    potential = potential or PotentialSpec()
    try:
        return _harmonic_doc(
            structure,
            potential,
            supercell_matrix,
            min_length,
            displacement,
            phonon_doc,
            nac_params,
            progress,
        )
    except MATERIAL_FAILURES as error:
        if structure is None and phonon_doc is not None:
            structure = field_value(phonon_doc, "structure")
            if isinstance(structure, dict):
                structure = Structure.from_dict(structure)
        return _failure_response("harmonic", error, structure, model=potential.model_string())


def _harmonic_doc(
    structure: Structure | None,
    potential: PotentialSpec,
    supercell_matrix: ArrayLike | None,
    min_length: float,
    displacement: float,
    phonon_doc: Any,
    nac_params: dict[str, Any] | None,
    progress: bool,
) -> HarmonicPhononDoc:
    """Body of :func:`harmonic_job` (same parameters)."""
    calculator = potential.calculator()
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
        result = harmonic_force_constants(phonon, calculator, displacement, progress=progress)
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
                displacements=as_array(data["displacements"]),
                forces=as_array(data["forces"]),
                energies=as_array(data["energies"]),
                sampling_force_constants=as_array(data["sampling_force_constants"]),
                index=data["index"],
            )
        )
    force_constants = _load_output(
        store, continuation.force_constants, "force_constants", ["force_constants"]
    )
    return SSCHAState(
        force_constants=as_array(force_constants),
        populations=populations,
        n_target_snapshots=continuation.n_target_snapshots,
        n_populations_drawn=continuation.n_populations_drawn,
        history=[IterationRecord(**record) for record in continuation.history],
    )


def _harmonic_force_constants(
    store: JobStore, harmonic: HarmonicReference
) -> tuple[np.ndarray | None, str]:
    """The harmonic force constants, from the harmonic job's stored output, or why not.

    Loaded by the harmonic job's uuid (:attr:`HarmonicReference.harmonic_uuid`) so that
    the job inputs carry no array.
    """
    if harmonic.harmonic_uuid is None:
        return None, "not computed: no harmonic job output to take the harmonic force constants"
    doc = store.query_one(
        {"uuid": harmonic.harmonic_uuid},
        properties=["output.force_constants"],
        sort={"index": -1},
        load={"data": ["force_constants"]},
    )
    force_constants = None if doc is None else doc.get("output", {}).get("force_constants")
    unloaded = isinstance(force_constants, dict) and "blob_uuid" in force_constants
    if force_constants is None or unloaded:
        reason = (
            f"not computed: the harmonic force constants (job {harmonic.harmonic_uuid}) "
            "are not in the store"
        )
        logger.warning("renormalisation measures %s", reason)
        return None, reason
    return as_array(force_constants), "ok"


def _temperature_doc(
    phonon: Phonopy,
    harmonic: HarmonicReference,
    result: SSCHAResult,
    final_iteration: SSCHAIterationDoc,
    warm_start: str,
    model_provenance: dict[str, Any],
    harmonic_force_constants: np.ndarray | None = None,
    renormalisation_note: str = "not computed: no harmonic force constants given",
) -> SSCHATemperatureDoc:
    structure, supercell_matrix = harmonic.structure, harmonic.supercell_matrix
    nac_params = harmonic.nac_params
    harmonic_labelled_frequencies = harmonic.labelled_frequencies
    harmonic_has_imaginary_modes = harmonic.has_imaginary_modes
    if nac_params is not None:  # NAC for the spectrum only, not for the SSCHA itself
        phonon = make_phonopy(structure, supercell_matrix, nac_params=nac_params)
    spectrum = phonon_spectrum(phonon, result.force_constants)
    # the SSCHA bounded the errors at the labelled q-points, in the same (ascending) order
    labels = (
        harmonic.labelled_qpoints
        if harmonic.labelled_qpoints is not None
        else labelled_qpoints(structure)
    )
    labelled_errors = {
        label: errors.tolist()
        for label, errors in zip(labels, result.qpoint_frequency_errors, strict=True)
        if label in spectrum.labelled_frequencies
    }
    shifts, mean_shift = frequency_shifts(
        spectrum.labelled_frequencies, harmonic_labelled_frequencies
    )
    measures: dict[str, Any] = {"renormalisation_note": renormalisation_note}
    if harmonic_force_constants is not None:
        if harmonic_force_constants.shape != result.force_constants.shape:
            measures["renormalisation_note"] = (
                f"not computed: harmonic force constants of shape {harmonic_force_constants.shape}"
                f" for a supercell of shape {result.force_constants.shape}"
            )
        else:
            values = renormalisation_measures(
                phonon,
                harmonic_force_constants,
                result.force_constants,
                result.temperature,
                statistics=result.settings.statistics,
                free_energy=result.free_energy,
                free_energy_error=result.free_energy_error,
                static_energy=float(harmonic.reference_energy) / len(phonon.supercell),
                harmonic_unstable=harmonic_has_imaginary_modes,
                free_energy_mesh=result.settings.free_energy_mesh,
            )
            measures.update(dataclasses.asdict(values), renormalisation_note="ok")
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
        sigma_a=None if result.anharmonicity is None else result.anharmonicity.sigma,
        sigma_a_error=None if result.anharmonicity is None else result.anharmonicity.sigma_error,
        sigma_a_by_group={} if result.anharmonicity is None else result.anharmonicity.by_group,
        free_energy_error=result.free_energy_error,
        free_energy_note=result.free_energy_note,
        has_imaginary_modes=spectrum.has_imaginary_modes,
        harmonic_has_imaginary_modes=harmonic_has_imaginary_modes,
        stabilised=harmonic_has_imaginary_modes and not spectrum.has_imaginary_modes,
        **measures,
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
    harmonic: HarmonicReference,
    temperature: float,
    potential: PotentialSpec,
    sscha_settings: dict[str, Any] | None = None,
    start_force_constants: ArrayLike | None = None,
    continuation: SSCHAContinuation | None = None,
    warm_start: str = "harmonic",
    progress: bool = False,
) -> Response | SSCHATemperatureDoc:
    """One SSCHA iteration; replaces itself by the next until the iterations stop.

    Parameters
    ----------
    harmonic : HarmonicReference
        Structure, supercell, reference energy and forces, harmonic frequencies and NAC
        parameters of the harmonic job.
    temperature : float
        Temperature, K.
    potential : PotentialSpec
        The potential (:meth:`PotentialSpec.calculator`).
    sscha_settings : dict, optional
        Keyword arguments of :class:`~tdphonon.sscha.SSCHASettings`.
    start_force_constants : array-like, optional
        Starting force constants (first iteration only), eV/Å².
    continuation : SSCHAContinuation, optional
        State left by the previous iteration (all later iterations).
    warm_start : str
        Where ``start_force_constants`` came from, recorded in the result.
    progress : bool
        Show a progress bar of the force evaluations.

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
            harmonic,
            temperature,
            potential,
            sscha_settings,
            start_force_constants,
            continuation,
            warm_start,
            progress,
        )
    except MATERIAL_FAILURES as error:
        iteration = 1 if continuation is None else len(continuation.history) + 1
        return _failure_response(
            "sscha", error, harmonic.structure, temperature, iteration, potential.model_string()
        )


def _sscha_iteration(
    harmonic: HarmonicReference,
    temperature: float,
    potential: PotentialSpec,
    sscha_settings: dict[str, Any] | None,
    start_force_constants: ArrayLike | None,
    continuation: SSCHAContinuation | None,
    warm_start: str,
    progress: bool,
) -> Response | SSCHATemperatureDoc:
    """Body of :func:`sscha_iteration_job` (same parameters)."""
    settings = SSCHASettings(**(sscha_settings or {}))
    calculator = potential.calculator()
    harmonic = harmonic.with_labelled_qpoints()  # found once, passed on to the next iterations
    assert harmonic.labelled_qpoints is not None
    structure, supercell_matrix = harmonic.structure, harmonic.supercell_matrix
    # symmetry analysis and symfc basis, shared by the iterations that run on this worker
    phonon, fitter = _cached_supercell(
        structure.to_json(), tuple(map(tuple, np.asarray(supercell_matrix).tolist()))
    )
    this = StoredOutput(uuid=CURRENT_JOB.job.uuid, index=CURRENT_JOB.job.index)
    if continuation is None:
        state, pointers = None, {}
    else:
        state = _load_state(CURRENT_JOB.store, continuation)
        pointers = {p.population_index: p for p in continuation.populations}
    sscha = SSCHA(
        phonon,
        calculator,
        temperature,
        settings,
        reference=(
            float(harmonic.reference_energy),
            np.asarray(harmonic.reference_forces, dtype=float),
        ),
        state=state,
        fitter=fitter,
        qpoints=list(harmonic.labelled_qpoints.values()),  # their errors are bounded too
        force_constants=(
            None if start_force_constants is None else np.asarray(start_force_constants, float)
        ),
    )
    record = sscha.step(progress=progress)
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
            harmonic=harmonic.compact(),
            temperature=temperature,
            potential=potential,
            sscha_settings=sscha_settings,
            continuation=next_state,
            warm_start=warm_start,
            progress=progress,
        )
        following.name = f"sscha {temperature:g} K iteration {record.iteration + 1}"
        return Response(output=iteration, replace=following)

    logger.info("SSCHA %g K: %s after %d iterations", temperature, stop, record.iteration)
    return _temperature_doc(
        phonon,
        harmonic,
        sscha.result(),
        iteration,
        warm_start,
        calculator.provenance(),
        *_harmonic_force_constants(CURRENT_JOB.store, harmonic),
    )
