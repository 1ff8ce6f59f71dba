"""Lattice thermal conductivity flows (atomate2-style Makers).

* :class:`ThermalConductivityMaker`: fc3 from the potential (one job), then phono3py kappa
  with a harmonic fc2 and, when given, the SSCHA fc2 of each temperature (one job per fc2),
  collected into a :class:`~tdphonon.schemas.ThermalConductivityDoc`.
* :class:`SSCHAConductivityMaker`: :class:`~tdphonon.flows.sscha.SSCHAMaker` (relax,
  harmonic, SSCHA per temperature) composed with the above: kappa with the harmonic and the
  renormalised fc2 at each temperature, the fc3 being the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobflow import Flow, Job, Maker, OutputReference
from pymatgen.core import Structure

from tdphonon.conductivity import FC3_DISTANCE, FC3_MIN_LENGTH, ConductivitySettings
from tdphonon.flows.sscha import SSCHAMaker
from tdphonon.jobs.common import field_value
from tdphonon.jobs.conductivity import collect_kappa_job, fc3_job, kappa_job
from tdphonon.potentials import PotentialSpec
from tdphonon.sampling import check_temperatures
from tdphonon.structures import (
    StructureError,
    check_structure,
    primitive_supercell_matrix,
    standard_primitive,
    supercell_matrix_array,
)

__all__ = ["SSCHAConductivityMaker", "ThermalConductivityMaker", "run_conductivity_flow"]


@dataclass
class ThermalConductivityMaker(Maker):
    """fc3 from the potential once, then phono3py kappa for each fc2.

    Parameters
    ----------
    name : str
        Flow name.
    model : str, os.PathLike or object
        Potential as :class:`~tdphonon.potentials.PotentialSpec` takes it; None:
        ``$TDPHONON_MODEL``, else the pretrained M3GNet.
    device, batch_size
        Device and supercells per model call (with ``model``, the jobs'
        :class:`~tdphonon.potentials.PotentialSpec`).
    fc3_method : {"random", "finite"}
        Random-displacement supercells fitted with symfc (default), or finite differences.
    fc3_snapshots : int or "auto"
        Random supercells, or pairs with ``fc3_plusminus`` ("auto": phono3py's estimate
        for the symfc basis).
    fc3_plusminus : bool
        Random displacements in +/- pairs (odd orders cancel in the fc3 fit).
    fc3_distance : float
        Displacement, Å.
    fc3_supercell_matrix : list, optional
        fc3 supercell (3 integers or 3x3) of the structure passed to ``make()``, as phonopy's
        ``--dim`` (with ``harmonic_output``: of its standard primitive structure); overrides
        ``fc3_min_length``.
    fc3_min_length : float
        Minimum image distance of the default fc3 supercell, Å (the fc2 supercell is the
        harmonic/SSCHA one, chosen separately).
    mesh : tuple of 3 int
        q-mesh of the kappa calculation.
    kappa_method : {"rta", "lbte"}
        Relaxation-time approximation or direct solution.
    isotope : bool
        Isotope scattering (natural abundances).
    mass_variances : list of float, optional
        Mass variances per atom of the unit cell (isotope scattering).
    boundary_mfp : float, optional
        Boundary mean free path, micrometre.
    born_charges : list, optional
        Born effective charges (n_unit, 3, 3) of the unit cell; with ``dielectric``, NAC.
    dielectric : list, optional
        Dielectric tensor (3, 3).
    seed : int
        Seed of the random displacements.
    """

    name: str = "tdphonon kappa"
    model: Any = None
    device: str = "auto"
    batch_size: int = 16
    fc3_method: str = "random"
    fc3_snapshots: int | str = "auto"
    fc3_plusminus: bool = True
    fc3_distance: float = FC3_DISTANCE
    fc3_supercell_matrix: list | None = None
    fc3_min_length: float = FC3_MIN_LENGTH
    mesh: Sequence[int] = (11, 11, 11)
    kappa_method: str = "rta"
    isotope: bool = False
    mass_variances: list[float] | None = None
    boundary_mfp: float | None = None
    born_charges: list | None = None
    dielectric: list | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the settings when the Maker is made (atomate2 style), not in the jobs."""
        self.settings()
        self.fc3_settings()
        if (self.born_charges is None) != (self.dielectric is None):
            raise ValueError("NAC needs both born_charges and dielectric")
        if self.fc3_supercell_matrix is not None:
            supercell_matrix_array(self.fc3_supercell_matrix, name="fc3_supercell_matrix")

    def settings(self) -> dict[str, Any]:
        """Validated :class:`~tdphonon.conductivity.ConductivitySettings` as a dict."""
        settings = ConductivitySettings(
            mesh=tuple(self.mesh),
            method=self.kappa_method,
            isotope=self.isotope,
            mass_variances=self.mass_variances,
            boundary_mfp=self.boundary_mfp,
        )
        return {
            "mesh": list(settings.mesh),
            "method": settings.method,
            "isotope": settings.isotope,
            "mass_variances": settings.mass_variances,
            "boundary_mfp": settings.boundary_mfp,
        }

    def fc3_settings(self) -> dict[str, Any]:
        """How fc3 is computed, validated."""
        if self.fc3_method not in ("random", "finite"):
            raise ValueError(f"unknown fc3_method {self.fc3_method!r}: use 'random' or 'finite'")
        if self.fc3_snapshots != "auto" and int(self.fc3_snapshots) < 1:
            raise ValueError(f"fc3_snapshots must be 'auto' or >= 1, got {self.fc3_snapshots}")
        if self.fc3_distance <= 0:
            raise ValueError(f"fc3_distance must be positive, got {self.fc3_distance}")
        return {
            "method": self.fc3_method,
            "number_of_snapshots": self.fc3_snapshots,
            "plusminus": self.fc3_plusminus,
            "distance": self.fc3_distance,
            "supercell_matrix": self.fc3_supercell_matrix,
            "min_length": self.fc3_min_length,
            "seed": self.seed,
        }

    def make(
        self,
        structure: Structure | OutputReference | None = None,
        temperatures: Sequence[float] = (300.0,),
        harmonic_output: Any = None,
        sscha_outputs: Sequence[Any] | None = None,
    ) -> Flow:
        """Make the flow.

        Parameters
        ----------
        structure : Structure or OutputReference, optional
            Unit cell. A concrete Structure is made standard primitive and used as it is
            (relax it first); not needed with ``harmonic_output``.
        temperatures : sequence of float
            K (> 0).
        harmonic_output : HarmonicPhononDoc or OutputReference, optional
            Harmonic phonons (``structure``, ``supercell_matrix``, ``force_constants``) of
            :func:`tdphonon.jobs.sscha.harmonic_job`: the fc3 is computed on its structure
            and its fc2 (on its supercell) gives the harmonic kappa. Without it the harmonic
            fc2 is the one fitted from the fc3 supercells.
        sscha_outputs : sequence, optional
            One SSCHATemperatureDoc (or reference) per temperature, in the same order:
            renormalised kappa at each temperature with its fc2.

        Returns
        -------
        Flow
            Output: :class:`~tdphonon.schemas.ThermalConductivityDoc`.
        """
        temperatures = self._check_temperatures(temperatures)
        settings, fc3_settings = self.settings(), self.fc3_settings()
        if sscha_outputs is not None and len(sscha_outputs) != len(temperatures):
            raise ValueError("sscha_outputs needs one document per temperature")
        potential = PotentialSpec(self.model, self.device, self.batch_size)
        if harmonic_output is not None:
            structure = (
                harmonic_output.structure
                if not isinstance(harmonic_output, dict)
                else harmonic_output["structure"]
            )
        elif structure is None:
            raise StructureError("a structure (or a harmonic phonon output) is needed")
        fc3_supercell_matrix = self.fc3_supercell_matrix
        if isinstance(structure, Structure) and harmonic_output is None:
            check_structure(structure)
            if fc3_supercell_matrix is not None:  # phonopy's --dim: of the cell given
                fc3_supercell_matrix = primitive_supercell_matrix(
                    structure, fc3_supercell_matrix
                ).tolist()
            structure = standard_primitive(structure)
        if isinstance(structure, Structure):
            potential = potential.resolve(structure, check=True)
        else:
            potential = potential.resolve()
        nac = {"born_charges": self.born_charges, "dielectric": self.dielectric}

        fc3 = fc3_job(
            structure,
            potential=potential,
            supercell_matrix=fc3_supercell_matrix,
            min_length=self.fc3_min_length,
            method=self.fc3_method,
            number_of_snapshots=self.fc3_snapshots,
            distance=self.fc3_distance,
            seed=self.seed,
            plusminus=self.fc3_plusminus,
        )
        fc3.name = f"fc3 ({self.fc3_method})"
        if harmonic_output is not None:
            harmonic_fc2 = field_value(harmonic_output, "force_constants")
            fc2_matrix = field_value(harmonic_output, "supercell_matrix")
            n_harmonic = field_value(harmonic_output, "n_force_evaluations")
        else:
            harmonic_fc2, fc2_matrix, n_harmonic = fc3.output.fc2, None, None
        common = {
            "structure": fc3.output.structure,
            "fc3": fc3.output.fc3,
            "fc3_supercell_matrix": fc3.output.supercell_matrix,
            "settings": settings,
            **nac,
        }
        harmonic = kappa_job(
            fc2=harmonic_fc2,
            fc2_supercell_matrix=fc2_matrix,
            temperatures=temperatures,
            label="harmonic",
            **common,
        )
        harmonic.name = "kappa harmonic"
        jobs: list[Job] = [fc3, harmonic]
        uuids = {"harmonic": harmonic.uuid}
        renormalized: list[dict[str, Any]] | None = None
        n_sscha: list[Any] | None = None
        if sscha_outputs is not None:
            renormalized, n_sscha = [], []
            for temperature, doc in zip(temperatures, sscha_outputs, strict=True):
                job = kappa_job(
                    fc2=field_value(doc, "force_constants"),
                    fc2_supercell_matrix=field_value(doc, "supercell_matrix"),
                    temperatures=[temperature],
                    label=f"{temperature:g} K",
                    **common,
                )
                job.name = f"kappa renormalized {temperature:g} K"
                jobs.append(job)
                uuids[f"{temperature:g} K"] = job.uuid
                renormalized.append(_summary_fields(job.output))
                n_sscha.append(field_value(doc, "n_force_evaluations"))
        collect = collect_kappa_job(
            fc3={
                "structure": fc3.output.structure,
                "supercell_matrix": fc3.output.supercell_matrix,
                "method": fc3.output.method,
                "n_supercells": fc3.output.n_supercells,
                "n_force_evaluations": fc3.output.n_force_evaluations,
            },
            harmonic_kappa=_summary_fields(harmonic.output, settings=True),
            renormalized_kappa=renormalized,
            temperatures=temperatures,
            kappa_uuids=uuids,
            n_harmonic_force_evaluations=n_harmonic,
            n_sscha_force_evaluations=n_sscha,
            fc3_settings=fc3_settings,
        )
        collect.name = "kappa summary"
        return Flow([*jobs, collect], output=collect.output, name=self.name)

    @staticmethod
    def _check_temperatures(temperatures: Sequence[float] | float) -> list[float]:
        return check_temperatures(temperatures, positive=True)


def _summary_fields(output: OutputReference, settings: bool = False) -> dict[str, Any]:
    names = ["kappa", "reasons", "min_frequency", "fc2_supercell_matrix"]
    if settings:
        names.append("settings")
    return {name: getattr(output, name) for name in names}


@dataclass
class SSCHAConductivityMaker(Maker):
    """SSCHA at the temperatures, fc3 once, kappa with harmonic and renormalised fc2.

    The fc3 is computed on the (relaxed) structure of the harmonic job, on its own supercell
    (``conductivity_maker.fc3_*``); the harmonic and SSCHA fc2 keep the SSCHA supercell,
    given to phono3py as its ``phonon_supercell_matrix``.

    Parameters
    ----------
    name : str
        Flow name.
    sscha_maker : SSCHAMaker
        Relaxation, harmonic phonons and SSCHA.
    conductivity_maker : ThermalConductivityMaker
        fc3 and kappa settings; its ``model`` defaults to the SSCHA maker's, its
        ``born_charges`` and ``dielectric`` to the SSCHA maker's ``born``.
    """

    name: str = "tdphonon sscha + kappa"
    sscha_maker: SSCHAMaker = field(default_factory=SSCHAMaker)
    conductivity_maker: ThermalConductivityMaker = field(default_factory=ThermalConductivityMaker)

    def make(self, structure: Structure, temperatures: Sequence[float] = (300.0,)) -> Flow:
        """Make the flow for one crystal.

        Returns
        -------
        Flow
            ``[SSCHA flow, fc3, kappa jobs, summary]``; output: the
            :class:`~tdphonon.schemas.ThermalConductivityDoc`.
        """
        from dataclasses import replace

        from tdphonon.jobs.sscha import harmonic_job

        temperatures = ThermalConductivityMaker._check_temperatures(temperatures)
        sscha_flow = self.sscha_maker.make(structure, temperatures)
        harmonic = next(
            job for job, _ in sscha_flow.iterflow() if job.function is harmonic_job.original
        )
        conductivity_maker = self.conductivity_maker
        if conductivity_maker.model is None:
            conductivity_maker = replace(conductivity_maker, model=self.sscha_maker.model)
        if conductivity_maker.fc3_supercell_matrix is not None:
            # given of the structure passed here (phonopy's --dim); the fc3 job works on the
            # standard primitive cell of the harmonic job
            conductivity_maker = replace(
                conductivity_maker,
                fc3_supercell_matrix=primitive_supercell_matrix(
                    structure, conductivity_maker.fc3_supercell_matrix
                ).tolist(),
            )
        if self.sscha_maker.born is not None and conductivity_maker.born_charges is None:
            # the SSCHA maker's Born charges, on the harmonic (= fc3 unit) cell
            conductivity_maker = replace(
                conductivity_maker,
                born_charges=harmonic.output.nac_params["born"],
                dielectric=harmonic.output.nac_params["dielectric"],
            )
        kappa_flow = conductivity_maker.make(
            temperatures=temperatures,
            harmonic_output=harmonic.output,
            sscha_outputs=list(sscha_flow.output),
        )
        return Flow([sscha_flow, kappa_flow], output=kappa_flow.output, name=self.name)


def run_conductivity_flow(
    flow: Flow, store: Any = None, ensure_success: bool = True
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], dict[str, Any] | None]:
    """Run a conductivity flow here; return harmonic, SSCHA and conductivity documents.

    Parameters
    ----------
    flow : Flow
        From :meth:`SSCHAConductivityMaker.make` or :meth:`ThermalConductivityMaker.make`.
    store : JobStore, optional
        Default :func:`tdphonon.stores.get_store` ``(None)``.
    ensure_success : bool
        Raise if a job failed.

    Returns
    -------
    harmonic : dict or None
        :class:`~tdphonon.schemas.HarmonicPhononDoc` fields (None without SSCHA).
    sscha : list of dict
        :class:`~tdphonon.schemas.SSCHATemperatureDoc` fields per temperature.
    conductivity : dict or None
        :class:`~tdphonon.schemas.ThermalConductivityDoc` fields.
    """
    from tdphonon.stores import check_store, get_store, load_output, run_flow

    store = check_store(store if store is not None else get_store(None))
    harmonic, sscha = run_flow(flow, store, ensure_success)
    conductivity = (
        load_output(store, flow.output.uuid) if isinstance(flow.output, OutputReference) else None
    )
    return harmonic, sscha, None if conductivity is None else dict(conductivity)
