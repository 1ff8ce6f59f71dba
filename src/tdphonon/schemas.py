"""Output documents of the tdphonon jobs (pydantic, atomate2 style).

Small arrays are :data:`Array` fields: numpy arrays in Python, nested lists once serialised
(jobflow / monty), numpy again when a document is read back. The large ones (force
constants, snapshot displacements and forces, fc3, mode-resolved kappa data) are
:data:`LargeArray` fields, serialised as :class:`PackedArray` (raw float64 bytes, base64)
and named in the ``data=`` argument of the jobs, so a :class:`jobflow.JobStore` puts them
into its additional ``"data"`` store (GridFS on MongoDB) and the documents themselves stay
far below MongoDB's 16 MB limit. Read from a store by hand, such an array is a dict;
:func:`as_array` (or monty's decoder) turns it back into numpy.

Each document class has one summary, derived from its fields (:meth:`Document.summarise`):
the command line's tables and JSON files and :class:`tdphonon.query.CampaignResults` use it.

Units: Å, eV, eV/Å (forces), eV/Å² (force constants), THz (frequencies), K.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np
from pydantic import (
    BaseModel,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    create_model,
)
from pymatgen.core import Structure
from pymatgen.phonon.bandstructure import PhononBandStructureSymmLine
from pymatgen.phonon.dos import PhononDos

from tdphonon.phonons import (
    ACOUSTIC_POCKET_RULE,
    IMAGINARY_TOLERANCE,
    MAX_REPORTED_POCKETS,
    RELATIVE_SHIFT_RULE,
    STABILISED_RULE,
)
from tdphonon.sscha import IterationRecord

__all__ = [
    "Array",
    "Document",
    "HarmonicPhononDoc",
    "JobFailureDoc",
    "KappaDoc",
    "LargeArray",
    "PackedArray",
    "PopulationDoc",
    "PopulationPointer",
    "SSCHAContinuation",
    "SSCHAIterationDoc",
    "SSCHATemperatureDoc",
    "StoredOutput",
    "Summary",
    "ThermalConductivityDoc",
    "ThirdOrderForceConstantsDoc",
    "as_array",
    "summary_fields",
]


class PackedArray:
    """A float array as stored: its shape and its float64 bytes (little-endian), base64.

    Serialising a large array as nested lists costs far more than computing it: jobflow
    sanitises every output twice and searches it once per data-store key, element by
    element, and JSON writes and parses every number as text. Packed, each of these touches
    one string, and the stored text is half as long. The ``@module``/``@class`` keys make
    monty's decoder (and so jobflow's references) return a numpy array.
    """

    @staticmethod
    def pack(array: Any) -> dict[str, Any]:
        """The serialised form of ``array`` (converted to float64)."""
        array = np.ascontiguousarray(array, dtype="<f8")
        return {
            "@module": __name__,
            "@class": "PackedArray",
            "shape": list(array.shape),
            "base64": base64.b64encode(array.tobytes()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> np.ndarray:
        """The numpy array of a serialised form (monty's decoder calls this)."""
        data = np.frombuffer(base64.b64decode(d["base64"]), dtype="<f8")
        return data.reshape(d["shape"]).astype(float)


def as_array(value: Any) -> np.ndarray:
    """A float numpy array from an array, nested lists or a :class:`PackedArray` dict.

    Raises
    ------
    ValueError
        ``value`` is the reference to an array left in the data store (a query without
        ``load=True``).
    """
    if isinstance(value, dict):
        if "blob_uuid" in value:
            raise ValueError(
                "array not loaded from the additional store (query the JobStore with load=True)"
            )
        if "base64" in value:
            return PackedArray.from_dict(value)
    return np.asarray(value, dtype=float)


#: A float array: numpy in Python, a nested list when serialised.
Array = Annotated[
    np.ndarray,
    PlainValidator(as_array),
    PlainSerializer(lambda array: np.asarray(array).tolist(), return_type=list),
    WithJsonSchema({"type": "array", "items": {}}),
]

#: A large float array (the data store's): numpy in Python, a :class:`PackedArray` dict
#: when serialised.
LargeArray = Annotated[
    np.ndarray,
    PlainValidator(as_array),
    PlainSerializer(PackedArray.pack, return_type=dict),
    WithJsonSchema({"type": "object", "properties": {"shape": {}, "base64": {}}}),
]

# -- summaries ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Summary:
    """Field metadata, ``Annotated[type, Summary(...)]``: how a field enters the summary.

    Parameters
    ----------
    key : str or None
        The field's key in the summary where not its name (JSON keys that tdphonon wrote
        before, kept for their readers).
    include : bool or None
        True or False overrides the rule of :func:`summary_fields` (e.g. a short list of
        dicts whose values are typed ``Any``).
    per_temperature : bool
        A list with one value per item of the document's ``temperatures``: the summary
        gives it in the entry of each temperature (its ``results``), not at the top.
    """

    key: str | None = None
    include: bool | None = None
    per_temperature: bool = False


_SCALARS = (bool, int, float, str, type(None))


def _is_small_json(annotation: Any, containers: bool = True) -> bool:
    """Whether values of the type are scalars, or lists / dicts of scalars (no Any)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return all(_is_small_json(arg, containers) for arg in get_args(annotation))
    if origin is Literal:
        return True
    if containers and origin in (list, tuple, dict):
        return all(_is_small_json(arg) for arg in get_args(annotation) if arg is not Ellipsis)
    return annotation in _SCALARS


@functools.cache
def summary_fields(model: type[BaseModel]) -> dict[str, Summary]:
    """The fields of a document that its summary holds, each with its :class:`Summary`.

    A field is in the summary when its values are scalars (bool, int, float, str, None)
    or small JSON (lists and dicts of scalars), unless its :class:`Summary` says otherwise:
    arrays, structures, band structures, DOS, nested documents and open-ended dicts
    (``Any``: histories, provenance, settings) are left out.

    Parameters
    ----------
    model : type of BaseModel
        A document class.

    Returns
    -------
    dict
        Field name -> its :class:`Summary` (``Summary()`` where it has none), in the
        order of the fields.
    """
    fields = {}
    for name, info in model.model_fields.items():
        summary = next((m for m in info.metadata if isinstance(m, Summary)), Summary())
        include = summary.include
        if include is None:
            include = _is_small_json(info.annotation)
        if include:
            fields[name] = summary
    return fields


def _scalar(annotation: Any) -> bool:
    return _is_small_json(annotation, containers=False)


class Document(BaseModel):
    """A job output document with one summary: its scalar and small JSON fields."""

    @classmethod
    def summary_keys(cls) -> dict[str, str]:
        """Field name -> key in :meth:`summarise` (per-temperature fields left out)."""
        return {
            name: summary.key or name
            for name, summary in summary_fields(cls).items()
            if not summary.per_temperature
        }

    @classmethod
    def scalar_keys(cls) -> tuple[str, ...]:
        """Keys of :meth:`summarise` whose values are scalars (table columns)."""
        return tuple(
            key
            for name, key in cls.summary_keys().items()
            if _scalar(cls.model_fields[name].annotation)
        )

    @classmethod
    def summarise(cls, doc: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """The summary of a document: its scalar and small JSON fields.

        Parameters
        ----------
        doc : mapping or document
            The document, or its fields (e.g. an output read from a JobStore, loaded or
            not: the summary fields are JSON there too).

        Returns
        -------
        dict
            Key (:meth:`summary_keys`) -> value, in the order of the fields; a field that
            the document lacks (written by an older tdphonon) has its default, or None.
            Per-temperature fields (:class:`Summary`) are in ``results``: one dict per
            temperature, ``temperature`` (K) first.
        """
        values = dict(doc) if isinstance(doc, BaseModel) else doc
        summary: dict[str, Any] = {}
        per_temperature: dict[str, list[Any]] = {}
        for name, field in summary_fields(cls).items():
            info = cls.model_fields[name]
            if name in values:
                value = values[name]
            elif info.is_required():
                value = None
            else:
                value = info.get_default(call_default_factory=True)
            if field.per_temperature:
                per_temperature[field.key or name] = list(value or [])
            else:
                summary[field.key or name] = value
        if per_temperature:
            temperatures = values.get("temperatures") or []
            summary["results"] = [
                {
                    "temperature": t,
                    **{key: v[i] if i < len(v) else None for key, v in per_temperature.items()},
                }
                for i, t in enumerate(temperatures)
            ]
        return summary


#: Descriptions shared by the harmonic and the SSCHA documents.
POCKET_RULE = f"{ACOUSTIC_POCKET_RULE}; imaginary: below {IMAGINARY_TOLERANCE} THz"
POCKETS_DESCRIPTION = (
    "Imaginary acoustic modes left out by that rule (acoustic pockets near Gamma): "
    "{'qpoint': fractional (reciprocal lattice of structure), 'frequency': THz}, the lowest "
    f"first, at most {MAX_REPORTED_POCKETS} q-points of the band path and the q-mesh"
)


class HarmonicPhononDoc(Document):
    """Harmonic phonons of the standard primitive cell computed with the potential."""

    structure: Structure = Field(
        description="Standard primitive cell actually used (unit and primitive cell of phonopy)"
    )
    supercell_matrix: list[list[int]] = Field(
        description="Supercell matrix applied to the standard primitive cell"
    )
    n_supercell_atoms: int = Field(description="Number of atoms in the supercell")
    force_constants: LargeArray = Field(
        description="Full supercell force constants, shape (N, N, 3, 3), eV/Å² (data store)"
    )
    displacements: LargeArray | None = Field(
        None,
        description="Finite displacements of the supercell, shape (n, N, 3), Å (data store); "
        "None when the force constants came from a previous phonon document",
    )
    forces: LargeArray | None = Field(
        None,
        description="Forces of the displaced supercells, shape (n, N, 3), eV/Å, reference "
        "forces not subtracted (data store)",
    )
    reference_energy: float = Field(description="Energy of the undisplaced supercell, eV")
    reference_forces: LargeArray = Field(
        description="Forces of the undisplaced supercell, shape (N, 3), eV/Å (data store)"
    )
    band_structure: PhononBandStructureSymmLine = Field(
        description="Band structure along the Setyawan-Curtarolo path, THz (data store)"
    )
    dos: PhononDos = Field(description="Total phonon density of states, THz (data store)")
    labelled_frequencies: Annotated[dict[str, list[float]], Summary(key="frequencies")] = Field(
        description="Frequencies at the labelled high-symmetry points, THz, ascending"
    )
    min_frequency: float = Field(
        description="Lowest frequency on the band path and the q-mesh, every mode included "
        "(acoustic pockets near Gamma too), THz"
    )
    min_frequency_excluding_acoustic_pockets: float | None = Field(
        None,
        description="Lowest frequency on the band path and the q-mesh that has_imaginary_modes "
        f"tests, THz: {ACOUSTIC_POCKET_RULE}",
    )
    acoustic_pockets: Annotated[list[dict[str, Any]], Summary(include=True)] = Field(
        default_factory=list, description=POCKETS_DESCRIPTION
    )
    has_imaginary_modes: bool = Field(
        description="Whether the crystal is dynamically unstable: imaginary modes on the band "
        f"path or the q-mesh, where {POCKET_RULE}"
    )
    nac_params: dict[str, Any] | None = Field(
        None,
        description="Non-analytical term correction (LO-TO splitting) in band_structure, dos "
        "and labelled_frequencies: born (Born effective charges per site of structure, "
        "(n, 3, 3), e), dielectric (3x3), factor; None: none (no Born charges given)",
    )
    n_force_evaluations: int = Field(description="Supercell force evaluations spent")
    provenance: dict[str, Any] = Field(
        description="model (potential provenance), settings, source, tdphonon_version"
    )


class PopulationDoc(Document):
    """One population of thermal snapshots with its forces (see tdphonon.sscha.Population)."""

    index: int = Field(description="Running number at this temperature (its random stream)")
    n_snapshots: int = Field(description="Number of snapshots (antithetic pairs)")
    displacements: LargeArray = Field(description="Displacements, shape (n, N, 3), Å (data store)")
    forces: LargeArray = Field(
        description="Forces, shape (n, N, 3), eV/Å, reference not subtracted (data store)"
    )
    energies: LargeArray = Field(description="Supercell energies, shape (n,), eV (data store)")
    sampling_force_constants: LargeArray = Field(
        description="Force constants whose thermal distribution generated the snapshots, "
        "shape (N, N, 3, 3), eV/Å² (data store)"
    )


class StoredOutput(BaseModel):
    """Where a job output is in the JobStore."""

    uuid: str = Field(description="Job uuid")
    index: int = Field(description="Job index (replaced jobs keep the uuid, index + 1)")


class PopulationPointer(StoredOutput):
    """An iteration output whose ``population`` field holds an active population."""

    population_index: int = Field(description="PopulationDoc.index of that population")


class SSCHAContinuation(BaseModel):
    """Compact state that lets the next iteration job continue the SSCHA.

    Only pointers to stored outputs and scalars: the arrays are loaded from the store by
    the next job, so job specs (e.g. FireWorks specs in MongoDB) stay small.
    """

    force_constants: StoredOutput = Field(
        description="Output whose ``force_constants`` are the current force constants"
    )
    populations: list[PopulationPointer] = Field(description="Populations still in use")
    n_target_snapshots: int = Field(description="Current target sample size")
    n_populations_drawn: int = Field(description="Populations drawn so far")
    history: list[dict[str, Any]] = Field(description="IterationRecord of every iteration")


def _dataclass_fields(record: type) -> dict[str, Any]:
    """pydantic field definitions of a dataclass: its types, ``metadata["description"]``."""
    hints = get_type_hints(record)
    return {
        field.name: (
            hints[field.name],
            Field(description=field.metadata["description"])
            if field.default is dataclasses.MISSING
            else Field(default=field.default, description=field.metadata["description"]),
        )
        for field in dataclasses.fields(record)
    }


#: The temperature and the fields of IterationRecord (taken from it: they cannot drift).
_IterationFields = create_model(
    "_IterationFields",
    __base__=Document,
    __doc__="The temperature and the fields of tdphonon.sscha.IterationRecord.",
    temperature=(float, Field(description="Temperature, K")),
    **_dataclass_fields(IterationRecord),
)


class SSCHAIterationDoc(_IterationFields):  # type: ignore[misc,valid-type]
    """One SSCHA iteration at one temperature (fields of tdphonon.sscha.IterationRecord).

    ``temperature`` (K), then the fields of :class:`tdphonon.sscha.IterationRecord`
    (derived from it), then the population, force constants and state below.
    """

    population: PopulationDoc | None = Field(
        None, description="Population drawn in this iteration (arrays in the data store)"
    )
    force_constants: LargeArray | None = Field(
        None,
        description="Force constants after this iteration (start of the next), "
        "(N, N, 3, 3), eV/Å² (data store); None in the final iteration, whose force "
        "constants are those of the SSCHATemperatureDoc",
    )
    continuation: SSCHAContinuation = Field(description="State passed to the next iteration")
    stop_reason: str | None = Field(None, description="Why the iterations stop here, or None")


class SSCHATemperatureDoc(Document):
    """Final SSCHA result at one temperature: renormalised phonons and free energy."""

    temperature: float = Field(description="Temperature, K")
    statistics: str = Field(description="'quantum' (Bose-Einstein) or 'classical'")
    structure: Structure = Field(description="Standard primitive cell")
    supercell_matrix: list[list[int]] = Field(description="Supercell of the standard primitive")
    force_constants: LargeArray = Field(
        description="Renormalised (SSCHA) supercell force constants, (N, N, 3, 3), eV/Å² "
        "(data store)"
    )
    band_structure: PhononBandStructureSymmLine = Field(
        description="Renormalised band structure, THz (data store)"
    )
    dos: PhononDos = Field(description="Renormalised phonon DOS, THz (data store)")
    labelled_frequencies: Annotated[dict[str, list[float]], Summary(key="frequencies")] = Field(
        description="Renormalised frequencies at the labelled high-symmetry points, THz"
    )
    labelled_frequency_errors: Annotated[
        dict[str, list[float]], Summary(key="frequency_errors")
    ] = Field(
        default_factory=dict,
        description="Bootstrap standard error of each labelled frequency (same order), THz; "
        "the tolerance bounds every one of them when converged",
    )
    harmonic_labelled_frequencies: dict[str, list[float]] = Field(
        description="Harmonic (0 K, no zero-point renormalisation) frequencies there, THz"
    )
    frequency_shifts: dict[str, list[float]] = Field(
        description="Renormalised minus harmonic frequency per labelled point, THz"
    )
    mean_frequency_shift: float = Field(
        description="Mean of frequency_shifts, acoustic modes at Gamma excluded, THz"
    )
    min_frequency: float = Field(
        description="Lowest renormalised frequency on the band path and the q-mesh, every mode "
        "included (acoustic pockets near Gamma too), THz"
    )
    min_frequency_excluding_acoustic_pockets: float | None = Field(
        None,
        description="Lowest renormalised frequency that has_imaginary_modes tests, THz: "
        f"{ACOUSTIC_POCKET_RULE}",
    )
    acoustic_pockets: Annotated[list[dict[str, Any]], Summary(include=True)] = Field(
        default_factory=list, description=POCKETS_DESCRIPTION
    )
    nac: bool = Field(
        False,
        description="Bands, DOS and labelled frequencies include the non-analytical term "
        "correction (LO-TO splitting; Born charges of the harmonic document's nac_params)",
    )
    commensurate_frequencies: Array = Field(
        description="Frequencies at the q-points commensurate with the supercell, THz"
    )
    commensurate_frequency_errors: Array = Field(
        description="Bootstrap standard errors of commensurate_frequencies, THz"
    )
    free_energy: float | None = Field(
        None, description="SSCHA free energy, eV/atom (None when undefined)"
    )
    free_energy_error: float | None = Field(None, description="Its standard error, eV/atom")
    sigma_a: float | None = Field(
        None,
        description="Anharmonicity score sigma^A (Knoop et al. 2020) of the final ensemble "
        "against the renormalised force constants: RMS of the forces they do not explain over "
        "the RMS force (0 for a harmonic crystal)",
    )
    sigma_a_error: float | None = Field(None, description="Its standard error (bootstrap)")
    sigma_a_by_group: dict[str, float] = Field(
        default_factory=dict,
        description="sigma^A of the atoms of each element ('O') and Wyckoff site ('O 3c')",
    )
    free_energy_note: str = Field(description="'ok' or why the free energy is undefined")
    has_imaginary_modes: bool = Field(
        description="Renormalised phonons unstable at T: imaginary modes on the band path or "
        f"the q-mesh, where {POCKET_RULE}"
    )
    harmonic_has_imaginary_modes: bool = Field(description="Harmonic phonons unstable")
    stabilised: bool = Field(
        description="Harmonic phonons unstable and renormalised phonons stable"
    )
    # renormalisation measures (tdphonon.phonons.renormalisation_measures)
    renormalisation_note: str = Field(
        "not computed (document of an older tdphonon)",
        description="'ok', or why the renormalisation measures below are None "
        "(the harmonic force constants were not available)",
    )
    renormalisation_mesh: list[int] | None = Field(
        None, description="Gamma-centred q-mesh of the relative frequency shifts"
    )
    mean_relative_shift: float | None = Field(
        None,
        description="Mean relative frequency shift, dimensionless (0.1: 10 % stiffer): "
        f"{RELATIVE_SHIFT_RULE}",
    )
    mean_absolute_relative_shift: float | None = Field(
        None, description="Mean of the absolute relative shifts (same modes and weights)"
    )
    max_relative_shift: float | None = Field(
        None, description="Relative shift of largest magnitude (signed) among those modes"
    )
    max_relative_shift_qpoint: list[float] | None = Field(
        None, description="Its q-point, fractional (reciprocal lattice of structure)"
    )
    harmonic_lowest_optical_frequency: float | None = Field(
        None,
        description="Lowest harmonic optical frequency at Gamma (fourth band, q = 0 exactly: "
        "no LO-TO splitting), THz; None with one atom per cell",
    )
    lowest_optical_frequency: float | None = Field(
        None, description="Lowest renormalised optical frequency at Gamma, THz"
    )
    lowest_optical_shift: float | None = Field(
        None, description="lowest_optical_frequency - harmonic_lowest_optical_frequency, THz"
    )
    lowest_optical_relative_shift: float | None = Field(
        None, description="That shift over the harmonic frequency (None if that is not real)"
    )
    stabilised_modes: Annotated[list[dict[str, Any]], Summary(include=True)] = Field(
        default_factory=list,
        description=f"Stabilised modes, {STABILISED_RULE}: {{'qpoint': fractional, "
        "'harmonic_frequencies': THz, 'frequencies': THz} per q-point, the most imaginary "
        f"first, at most {MAX_REPORTED_POCKETS} q-points",
    )
    stabilised_mode_fraction: float | None = Field(
        None, description="Fraction of the modes of the q-mesh (q-point weights) stabilised"
    )
    harmonic_free_energy: float | None = Field(
        None,
        description="Harmonic free energy at this T with the harmonic force constants: static "
        "energy plus phonopy's thermal properties on the SSCHA's free-energy mesh, same "
        "statistics, eV/atom; None when the harmonic phonons are unstable",
    )
    anharmonic_free_energy: float | None = Field(
        None,
        description="Anharmonic free-energy correction: free_energy - harmonic_free_energy, "
        "eV/atom (None when either is undefined)",
    )
    anharmonic_free_energy_error: float | None = Field(
        None, description="Its standard error (that of free_energy), eV/atom"
    )
    anharmonic_free_energy_note: str | None = Field(
        None, description="'ok' or why anharmonic_free_energy is undefined"
    )
    converged: bool = Field(description="SSCHA converged")
    message: str = Field(description="'converged' or why not")
    n_force_evaluations: int = Field(description="Snapshot force evaluations at this T")
    n_iterations: int = Field(description="SSCHA iterations at this T")
    history: list[dict[str, Any]] = Field(description="IterationRecord of every iteration")
    warm_start: str = Field(
        description="Where the starting force constants came from ('harmonic' or 'T K')"
    )
    final_iteration: SSCHAIterationDoc = Field(description="The last iteration")
    provenance: dict[str, Any] = Field(
        description="model (potential provenance), seed, settings, tdphonon_version"
    )


class JobFailureDoc(Document):
    """Why a job could not produce its result (stored instead of raising).

    A job of a campaign that meets a failure inherent to the material or the potential
    (non-finite forces, a diverging SSCHA, an unusable structure) outputs this document
    and stops its children, so that the reason is in the JobStore, queryable, and the
    other materials of the campaign go on.
    """

    failed: bool = Field(True, description="Always True: marks failure documents")
    stage: str = Field(description="'harmonic' or 'sscha'")
    temperature: float | None = Field(None, description="Temperature of the SSCHA stage, K")
    iteration: int | None = Field(None, description="SSCHA iteration that failed, from 1")
    error_type: str = Field(description="Exception class name, e.g. 'NonFiniteForcesError'")
    reason: str = Field(description="One-line reason")
    formula: str | None = Field(None, description="Reduced formula of the material")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="Model and tdphonon version"
    )


# -- lattice thermal conductivity (tdphonon.jobs.conductivity) ----------------------------------


class ThirdOrderForceConstantsDoc(Document):
    """Third-order force constants from the potential (output of ``fc3_job``)."""

    structure: Structure = Field(description="Unit (= primitive) cell the fc3 belong to")
    supercell_matrix: list[list[int]] = Field(
        description="fc3 supercell of the unit cell (phonopy convention)"
    )
    n_supercell_atoms: int = Field(description="Atoms of the fc3 supercell")
    fc3: LargeArray = Field(
        description="Compact fc3, shape (n_unit, N, N, 3, 3, 3), eV/Å³ (data store)"
    )
    fc2: LargeArray | None = Field(
        None, description="fc2 fitted from the same supercells, (n_unit, N, 3, 3), eV/Å² (data)"
    )
    method: str = Field(description="'random' (random displacements + symfc) or 'finite'")
    distance: float = Field(description="Displacement, Å")
    random_seed: int | None = Field(None, description="Seed of the random displacements")
    n_supercells: int = Field(description="Displaced fc3 supercells evaluated")
    n_force_evaluations: int = Field(description="Supercell evaluations incl. the reference")
    wall_time: float = Field(description="Seconds spent (forces and fit)")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="model (potential provenance), tdphonon_version"
    )


class KappaDoc(Document):
    """Thermal conductivity of one fc2 with the shared fc3 (output of ``kappa_job``).

    The mode-resolved arrays go to the JobStore's data store.
    """

    label: str = Field(description="'harmonic' or the SSCHA temperature, e.g. '300 K'")
    temperatures: list[float] = Field(description="Temperatures, K")
    kappa: list[list[float] | None] = Field(
        description="Per temperature kappa, W/m-K (xx yy zz yz xz xy), None if not defined"
    )
    reasons: list[str | None] = Field(description="Per temperature why kappa is not defined")
    min_frequency: float = Field(
        description="Lowest fc2 frequency on the q-mesh (acoustic Gamma modes excluded), THz"
    )
    fc2_supercell_matrix: list[list[int]] = Field(description="fc2 supercell (phonopy)")
    fc3_supercell_matrix: list[list[int]] = Field(description="fc3 supercell (phonopy)")
    settings: dict[str, Any] = Field(description="ConductivitySettings (mesh, method, ...)")
    qpoints: LargeArray | None = Field(None, description="Irreducible q-points (data store)")
    weights: LargeArray | None = Field(None, description="Their weights (data store)")
    frequencies: LargeArray | None = Field(None, description="(n_q, n_band), THz (data store)")
    group_velocities: LargeArray | None = Field(
        None, description="(n_q, n_band, 3), THz Å (data store)"
    )
    gammas: LargeArray | None = Field(
        None, description="Linewidths (n_T, n_q, n_band), THz (data store)"
    )
    mode_kappa: LargeArray | None = Field(
        None, description="Mode kappa (n_T, n_q, n_band, 6), W/m-K (data store)"
    )
    heat_capacities: LargeArray | None = Field(
        None, description="Mode heat capacities (n_T, n_q, n_band), eV/K (data store)"
    )
    wall_time: float = Field(description="Seconds spent")


def _per_t(key: str | None = None) -> Summary:
    return Summary(key=key, per_temperature=True)


_PER_T = _per_t()


class ThermalConductivityDoc(Document):
    """Kappa with harmonic and SSCHA-renormalised fc2 (same fc3), per temperature."""

    formula: str = Field(description="Reduced formula")
    structure: Structure = Field(description="Unit (standard primitive) cell")
    temperatures: Annotated[list[float], Summary(include=False)] = Field(
        description="Temperatures, K (the summary's results: one entry per temperature)"
    )
    kappa_harmonic: Annotated[list[list[float] | None], _PER_T] = Field(
        description="Per T kappa with the harmonic fc2, W/m-K (xx yy zz yz xz xy) or None"
    )
    kappa_renormalized: Annotated[list[list[float] | None], _PER_T] = Field(
        description="Per T kappa with the SSCHA fc2 at T, W/m-K, or None"
    )
    harmonic_reasons: Annotated[list[str | None], _per_t("reason_harmonic")] = Field(
        description="Why harmonic kappa is not defined"
    )
    renormalized_reasons: Annotated[list[str | None], _per_t("reason_renormalized")] = Field(
        description="Why renormalised kappa is not defined or not computed"
    )
    ratio: Annotated[list[list[float | None] | None], _per_t("ratio_components")] = Field(
        description="Per T kappa_renormalized / kappa_harmonic per component (None where "
        "either is undefined or the harmonic component vanishes)"
    )
    ratio_trace: Annotated[list[float | None], _per_t("ratio")] = Field(
        description="Per T ratio of the traces (isotropic average)"
    )
    harmonic_min_frequency: float | None = Field(
        None, description="Lowest harmonic frequency on the q-mesh, THz"
    )
    renormalized_min_frequencies: Annotated[
        list[float | None], _per_t("renormalized_min_frequency")
    ] = Field(description="Lowest renormalised frequency on the q-mesh per T, THz")
    fc3_method: str = Field(description="'random' or 'finite'")
    fc3_supercell_matrix: list[list[int]] = Field(description="fc3 supercell (phonopy)")
    fc2_supercell_matrix: list[list[int]] = Field(description="fc2 (SSCHA) supercell (phonopy)")
    settings: dict[str, Any] = Field(description="ConductivitySettings and fc3 settings")
    n_fc3_supercells: int = Field(description="Displaced fc3 supercells (force evaluations)")
    n_harmonic_force_evaluations: int | None = Field(
        None, description="Force evaluations of the harmonic fc2"
    )
    n_sscha_force_evaluations: Annotated[list[int | None], _PER_T] = Field(
        description="Force evaluations of the SSCHA at each T"
    )
    n_force_evaluations: int = Field(description="All supercell force evaluations")
    kappa_uuids: dict[str, str] = Field(
        description="uuid of each KappaDoc (mode-resolved data), keyed by its label"
    )
    provenance: dict[str, Any] = Field(default_factory=dict, description="tdphonon version")


class StoredModel(BaseModel):
    """Reference to a fine-tuned potential stored in a JobStore (see FineTuneDoc).

    Pass it (or ``finetune_job.output.model``) as ``model`` to any tdphonon Maker or
    :class:`~tdphonon.potentials.PotentialSpec`: the archive is fetched from the store
    into a local cache (``$TDPHONON_MODEL_CACHE/<sha256>``), its hash verified and the model
    loaded in the right message convention.
    """

    uuid: str = Field(description="uuid of the fine-tuning job whose output holds the archive")
    sha256: str = Field(description="SHA-256 of the model archive (tar.gz)")
    name: str = Field(description="Model name (folder name)")
    n_bytes: int = Field(description="Size of the archive, bytes")
    base_model: str | None = Field(None, description="Name of the pretrained base model")

    @property
    def uri(self) -> str:
        """``tdphonon-model://<uuid>/<sha256>``: a string form accepted as ``model``."""
        return f"tdphonon-model://{self.uuid}/{self.sha256}"


class FineTuneDoc(Document):
    """Output of the fine-tuning job: the model (archive in the data store) and its metrics."""

    model: StoredModel = Field(description="Reference to pass as model= to SSCHA Makers")
    model_archive: str = Field(description="Model folder as a base64-encoded tar.gz (data store)")
    base_model: dict[str, Any] = Field(description="Provenance of the pretrained potential")
    data: list[dict[str, Any]] = Field(description="Training force sets (summaries)")
    validation: list[dict[str, Any]] = Field(description="Validation force sets (summaries)")
    settings: dict[str, Any] = Field(description="FineTuneSettings used")
    validation_before: dict[str, Any] | None = Field(
        None, description="Phonon evaluation of the pretrained model on validation (THz, eV/Å)"
    )
    validation_after: dict[str, Any] | None = Field(
        None, description="Phonon evaluation of the fine-tuned model on validation"
    )
    frequency_mae_ratio: float | None = Field(
        None, description="Validation frequency MAE pretrained / fine-tuned"
    )
    forgetting: dict[str, Any] = Field(
        description="Change of energies/forces on structures outside training"
    )
    history: list[dict[str, Any]] = Field(description="Per-epoch losses and validation MAE")
    best_epoch: int = Field(description="Epoch of the kept weights (0 = pretrained)")
    training_time_s: float = Field(description="Wall time of training, s")
    provenance: dict[str, Any] = Field(default_factory=dict, description="versions, host")
