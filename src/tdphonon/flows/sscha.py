"""The temperature-dependent phonon workflow as a jobflow Flow (atomate2-style Maker)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobflow import Flow, Job, Maker, OutputReference
from pymatgen.core import Structure

from tdphonon.jobs.common import field_value
from tdphonon.jobs.sscha import (
    HarmonicReference,
    default_relax_maker,
    harmonic_job,
    relax_job,
    sscha_iteration_job,
)
from tdphonon.potentials import PotentialSpec
from tdphonon.sampling import check_temperatures
from tdphonon.sscha import SSCHASettings
from tdphonon.structures import (
    MIN_IMAGE_DISTANCE,
    StructureError,
    check_structure,
    check_supercell,
    primitive_nac_params,
    primitive_supercell_matrix,
    standard_primitive,
    supercell_matrix_array,
)

if TYPE_CHECKING:
    from atomate2.forcefields.jobs import ForceFieldRelaxMaker

__all__ = ["SSCHAMaker"]


@dataclass
class SSCHAMaker(Maker):
    """Harmonic phonons, then the SSCHA at each temperature, one job per iteration.

    Jobs: [relax (atomate2 ``ForceFieldRelaxMaker`` with tdphonon's potential, see
    :func:`tdphonon.jobs.sscha.relax_job`)] -> harmonic (:func:`tdphonon.jobs.sscha.harmonic_job`) ->
    for each temperature, in the given order, a chain of
    :func:`tdphonon.jobs.sscha_iteration_job` warm-started from the final force constants
    of the previous temperature (the first from the harmonic ones). The flow output is the
    list of :class:`~tdphonon.schemas.SSCHATemperatureDoc`, one per temperature.

    Parameters
    ----------
    name : str
        Flow name.
    model : str, os.PathLike or None
        matgl model folder or hub name, or ``"emt"``; None: ``$TDPHONON_MODEL``, else the pretrained M3GNet (when
        the flow is made: jobs get the resolved value).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"`` for the jobs.
    batch_size : int
        Supercells per model call. ``model``, ``device`` and ``batch_size`` travel to the
        jobs as one :class:`~tdphonon.potentials.PotentialSpec` (:meth:`potential`).
    progress : bool
        Progress bars of the force evaluations in the harmonic and SSCHA jobs (the CLI
        sets it unless ``--quiet``).
    relax_maker : ForceFieldRelaxMaker or None
        atomate2's relaxation run first, with the flow's potential (its own force field is
        replaced): :func:`~tdphonon.jobs.sscha.default_relax_maker` keeps the space group and
        relaxes the cell to 1e-3 eV/Å; change its fields (``relax_kwargs``, ``steps``,
        ``relax_cell``, ...) directly or with ``update_kwargs``. None: keep the geometry given.
    supercell_matrix : list, optional
        Supercell of the structure passed to :meth:`make`, as phonopy's ``--dim``: 3
        integers (diagonal) or 3x3 whose columns are the supercell vectors in units of its
        lattice vectors (e.g. ``[3, 3, 3]`` of a 4-atom conventional fcc cell: 108 atoms).
        The jobs get the equivalent matrix of the standard primitive cell
        (:func:`tdphonon.structures.primitive_supercell_matrix`). Overrides ``min_length``;
        not used with a phonon document (its supercell is kept).
    min_length : float
        Minimum distance between periodic images of the chosen supercell, Å.
    displacement : float
        Finite displacement of the harmonic calculation, Å.
    sscha_settings : dict
        Keyword arguments of :class:`~tdphonon.sscha.SSCHASettings` (``statistics``,
        ``frequency_tolerance``, ``seed``, ``max_snapshots``, ...).
    born : dict, optional
        Non-analytical term correction (LO-TO splitting) of the band structures, DOS and
        labelled frequencies (not of the SSCHA, which works on commensurate modes):
        ``born`` (Born effective charges per site of the structure passed to :meth:`make`,
        or of the phonon document's structure, (n, 3, 3), e), ``dielectric`` (3x3) and
        optionally ``factor``, as plain lists, as
        :func:`tdphonon.structures.read_born` reads them from a phonopy BORN file. None:
        no NAC (the potentials give no Born charges).
    """

    name: str = "tdphonon sscha"
    model: str | None = None
    device: str = "auto"
    batch_size: int = 16
    progress: bool = False
    relax_maker: ForceFieldRelaxMaker | None = field(default_factory=default_relax_maker)
    supercell_matrix: list | None = None
    min_length: float = 10.0
    displacement: float = 0.01
    sscha_settings: dict[str, Any] = field(default_factory=dict)
    born: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Check the settings when the Maker is made (atomate2 style), not in the jobs."""
        self._settings()
        if self.supercell_matrix is not None:
            supercell_matrix_array(self.supercell_matrix)
        elif self.min_length < MIN_IMAGE_DISTANCE:
            raise StructureError(
                f"min_length {self.min_length} Å is too small (at least {MIN_IMAGE_DISTANCE} Å)"
            )
        if self.displacement <= 0:
            raise ValueError(f"displacement must be positive (Å), got {self.displacement}")

    def make(
        self,
        structure: Structure | None = None,
        temperatures: Sequence[float] = (300.0,),
        prev_phonon_doc: Any = None,
    ) -> Flow:
        """Make the flow for one crystal.

        Parameters
        ----------
        structure : Structure
            Ordered crystal; any cell (the standard primitive cell is used). May be None
            when ``prev_phonon_doc`` is given.
        temperatures : sequence of float
            Temperatures in K, computed in this order.
        prev_phonon_doc : PhononBSDOSDoc, dict or OutputReference, optional
            Start from the harmonic force constants of an atomate2 phonon result instead
            of relaxing and computing them (see :meth:`make_from_phonon_doc`).

        Raises
        ------
        StructureError
            Disordered, degenerate or otherwise unusable structure.
        UnsupportedElementError
            An element the potential does not know.
        ValueError
            Bad temperatures or SSCHA settings.
        """
        if prev_phonon_doc is not None:
            if structure is not None and not isinstance(prev_phonon_doc, OutputReference):
                self._check_same_crystal(structure, field_value(prev_phonon_doc, "structure"))
            return self.make_from_phonon_doc(prev_phonon_doc, temperatures)
        if structure is None:
            raise StructureError("a structure (or prev_phonon_doc) is needed")
        temperatures, settings = self._check_inputs(temperatures)
        check_structure(structure)
        potential = self.potential(structure)
        primitive = standard_primitive(structure)
        supercell_matrix = None
        if self.supercell_matrix is not None:
            supercell_matrix = primitive_supercell_matrix(structure, self.supercell_matrix)
            check_supercell(primitive, supercell_matrix)
        jobs: list[Job] = []
        source: Structure | OutputReference = primitive
        if self.relax_maker is not None:
            relax = relax_job(primitive, potential, self.relax_maker)
            jobs.append(relax)
            source = relax.output.structure
        harmonic = harmonic_job(
            source,
            potential=potential,
            supercell_matrix=None if supercell_matrix is None else supercell_matrix.tolist(),
            min_length=self.min_length,
            displacement=self.displacement,
            nac_params=None if self.born is None else primitive_nac_params(structure, self.born),
            progress=self.progress,
        )
        harmonic.name = "harmonic"
        return self._flow([*jobs, harmonic], harmonic, temperatures, potential, settings)

    def make_from_phonon_doc(
        self, phonon_doc: Any, temperatures: Sequence[float] = (300.0,)
    ) -> Flow:
        """Make the flow from an existing atomate2 phonon result.

        The structure and harmonic force constants of the document are used as they are
        (no relaxation: the force constants belong to its geometry), mapped onto the
        standard primitive cell and its supercell (:func:`tdphonon.phonons.phonon_doc_force_constants`);
        the potential only evaluates the undisplaced supercell (the SSCHA reference).

        Parameters
        ----------
        phonon_doc : PhononBSDOSDoc, dict or OutputReference
            ``atomate2.common.schemas.phonons.PhononBSDOSDoc`` with ``structure``,
            ``supercell_matrix`` and ``force_constants``. A concrete document is reduced to
            these three fields in the job input; with FireWorks, prefer an
            ``OutputReference`` (e.g. ``phonon_flow.output``), resolved from the store at
            run time, so that no force constants are written into the job spec.
        temperatures : sequence of float
            Temperatures in K, computed in this order.
        """
        temperatures, settings = self._check_inputs(temperatures)
        if isinstance(phonon_doc, OutputReference):
            potential = self.potential(None)
        else:
            structure = field_value(phonon_doc, "structure")
            if isinstance(structure, dict):
                structure = Structure.from_dict(structure)
            fields = {
                name: field_value(phonon_doc, name)
                for name in ("structure", "supercell_matrix", "force_constants")
            }
            missing = [name for name, value in fields.items() if value is None]
            if missing:
                raise ValueError(
                    f"the phonon document has no {', '.join(missing)} (atomate2 PhononMaker "
                    "with store_force_constants=True is needed)"
                )
            check_structure(structure)
            potential = self.potential(structure)
            phonon_doc = fields
        harmonic = harmonic_job(
            phonon_doc=phonon_doc,
            potential=potential,
            nac_params=self.born,
            progress=self.progress,
        )
        harmonic.name = "harmonic (from phonon document)"
        return self._flow([harmonic], harmonic, temperatures, potential, settings)

    # -- helpers ------------------------------------------------------------------------------

    def _flow(
        self,
        jobs: list[Job],
        harmonic: Job,
        temperatures: list[float],
        potential: PotentialSpec,
        settings: dict[str, Any],
    ) -> Flow:
        chains = []
        reference = HarmonicReference.from_harmonic(harmonic.output, nac=self.born is not None)
        start, warm_start = harmonic.output.force_constants, "harmonic"
        for temperature in temperatures:
            first = sscha_iteration_job(
                harmonic=reference,
                temperature=temperature,
                potential=potential,
                sscha_settings=settings,
                start_force_constants=start,
                warm_start=warm_start,
                progress=self.progress,
            )
            first.name = f"sscha {temperature:g} K iteration 1"
            chains.append(first)
            start, warm_start = first.output.force_constants, f"{temperature:g} K"
        flow = Flow([*jobs, *chains], output=[c.output for c in chains], name=self.name)
        # what the flow is expected to give: tdphonon.query tells a finished run from one
        # that stopped part-way (campaigns set the same, with the material's identity)
        flow.update_metadata({"temperatures": temperatures})
        return flow

    def _settings(self) -> SSCHASettings:
        """``sscha_settings`` as the checked :class:`~tdphonon.sscha.SSCHASettings`."""
        valid = [f.name for f in dataclasses.fields(SSCHASettings)]
        unknown = sorted(set(self.sscha_settings) - set(valid))
        if unknown:
            raise ValueError(f"unknown SSCHA setting(s) {unknown}; valid: {', '.join(valid)}")
        return SSCHASettings(**self.sscha_settings)

    def _check_inputs(self, temperatures: Sequence[float]) -> tuple[list[float], dict[str, Any]]:
        settings = self._settings()
        return check_temperatures(temperatures, settings.statistics), dataclasses.asdict(settings)

    def potential(self, structure: Structure | None = None) -> PotentialSpec:
        """The jobs' :class:`~tdphonon.potentials.PotentialSpec`, resolved and checked.

        Resolved where the flow is made (:meth:`PotentialSpec.resolve`); unless the model is
        the output of an earlier job, it is loaded now and, given a ``structure``, checked
        to know its elements.
        """
        spec = PotentialSpec(self.model, self.device, self.batch_size)
        return spec.resolve(structure, check=True)

    @staticmethod
    def _check_same_crystal(structure: Structure, doc_structure: Any) -> None:
        from pymatgen.analysis.structure_matcher import StructureMatcher

        if isinstance(doc_structure, dict):
            doc_structure = Structure.from_dict(doc_structure)
        if doc_structure is not None and not StructureMatcher().fit(structure, doc_structure):
            raise StructureError(
                f"structure {structure.composition.reduced_formula} is not the crystal of the "
                f"phonon document ({doc_structure.composition.reduced_formula})"
            )
