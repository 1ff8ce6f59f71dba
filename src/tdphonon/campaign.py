"""High-throughput campaigns: one SSCHA flow per structure, submitted to FireWorks.

A campaign is many crystals computed with the same settings. :class:`CampaignMaker` builds
each crystal's flow: optionally a fine-tuning job first (whose model every SSCHA job
uses), then :class:`~tdphonon.flows.sscha.SSCHAMaker`'s relax -> harmonic -> SSCHA
iterations, optionally followed by the thermal conductivity. Every job carries the
material's identity in its metadata (``tdphonon_key``, ``material``, ``formula``, the
temperatures), so the JobStore and the launchpad can be queried per material, and
:func:`submit_flows` skips a structure already submitted with the same settings.

Fine-tuning: one fine-tuning workflow per (data, base model, settings), shared by all
materials of the campaign. :func:`submit_flows` submits it first; the material
workflows are submitted once it has completed (run the submission again then: it is
idempotent), each referring to the fine-tuned model in the JobStore, so no workflow
waits on another and each stays small.

Job routing: force-evaluation-heavy jobs (SSCHA iterations, harmonic force constants,
fine-tuning, third-order forces) get one FireWorks category (``"gpu"`` by default), light
jobs another (``"cpu"``); a FireWorker started with ``category: gpu`` pulls only the
former. With ``routing="fworker"`` the names go to ``_fworker`` instead (a FireWorker
whose ``name`` matches). Replacement jobs (the next SSCHA iteration) inherit the routing
of the job they replace (jobflow passes ``manager_config`` on).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobflow import Flow, Job, Maker
from pymatgen.core import Structure

from tdphonon.flows.sscha import SSCHAMaker
from tdphonon.potentials import PotentialSpec
from tdphonon.stores import FINETUNE_KEY_FIELD, KEY_FIELD
from tdphonon.structures import StructureError, check_structure, read_structure, standard_primitive

if TYPE_CHECKING:
    from fireworks import LaunchPad, Workflow
    from jobflow import JobStore

__all__ = [
    "HEAVY_JOBS",
    "CampaignMaker",
    "SubmissionReport",
    "existing_keys",
    "material_key",
    "read_structures",
    "route_jobs",
    "submit_flows",
]

logger = logging.getLogger(__name__)

#: Names of the job functions that evaluate many forces (or train): routed to the heavy
#: (GPU) category. Everything else (relaxation, bookkeeping, phono3py solves) is light.
HEAVY_JOBS: tuple[str, ...] = (
    "sscha_iteration_job",  # snapshot forces, every iteration
    "harmonic_job",  # finite-displacement forces
    "finetune_job",  # training
    "fc3_job",  # third-order displacement forces
)

_STRUCTURE_SUFFIXES = {".cif", ".json", ".vasp", ".poscar", ".xyz", ".extxyz", ".cell"}
_POSCAR_NAMES = ("POSCAR", "CONTCAR")


# -- structures ---------------------------------------------------------------------------------


def _is_structure_file(path: Path) -> bool:
    return path.suffix.lower() in _STRUCTURE_SUFFIXES or path.name.startswith(_POSCAR_NAMES)


def _read_json_structures(path: Path) -> list[tuple[str, Structure]]:
    """Structures of a pymatgen JSON file: one Structure, or a list of them."""
    from monty.serialization import loadfn

    try:
        content = loadfn(path)
    except Exception as error:
        raise StructureError(f"cannot read {path}: {error}") from None
    items = content if isinstance(content, list) else [content]
    structures = []
    for number, item in enumerate(items):
        if isinstance(item, dict):
            try:
                item = Structure.from_dict(item)
            except Exception:
                raise StructureError(f"{path} entry {number} is not a pymatgen Structure") from None
        if not isinstance(item, Structure):
            raise StructureError(f"{path} entry {number} is not a pymatgen Structure")
        name = path.stem if len(items) == 1 else f"{path.stem}-{number}"
        structures.append((name, item))
    return structures


def _fetch_materials_project(
    ids: Sequence[str], api_key: str | None
) -> list[tuple[str, Structure]]:
    api_key = api_key or os.environ.get("MP_API_KEY") or os.environ.get("PMG_MAPI_KEY")
    if not api_key:
        raise StructureError(
            f"{ids[0]} looks like a Materials Project id but no API key is set "
            "(export MP_API_KEY=... or pass --mp-api-key)"
        )
    try:
        from mp_api.client import MPRester
    except ImportError:
        raise StructureError(
            "Materials Project ids need the mp-api client: pip install mp-api"
        ) from None
    with MPRester(api_key) as rester:
        docs = rester.materials.summary.search(
            material_ids=list(ids), fields=["material_id", "structure"]
        )
    found = {str(doc.material_id): doc.structure for doc in docs}
    missing = [i for i in ids if i not in found]
    if missing:
        raise StructureError(f"not found in the Materials Project: {', '.join(missing)}")
    return [(i, found[i]) for i in ids]


def read_structures(
    sources: Iterable[str | os.PathLike], mp_api_key: str | None = None
) -> list[tuple[str, Structure]]:
    """Read the structures of a campaign.

    Parameters
    ----------
    sources : iterable of str or path
        Files (CIF, POSCAR/CONTCAR, ``*.vasp``, pymatgen JSON of one Structure or a list
        of them, or any format ASE reads), folders (every structure file in them, not
        recursive, sorted by name), or Materials Project ids (``mp-149``; need the
        ``mp-api`` client and an API key).
    mp_api_key : str, optional
        Materials Project API key; default ``$MP_API_KEY`` (or ``$PMG_MAPI_KEY``).

    Returns
    -------
    list of (str, Structure)
        A name for each structure (file stem, or the id) and the structure.

    Raises
    ------
    StructureError
        A file that cannot be read, an empty folder, an unknown id.
    """
    structures: list[tuple[str, Structure]] = []
    mp_ids: list[str] = []
    for source in sources:
        text = str(source)
        path = Path(text).expanduser()
        if not path.exists() and text.lower().startswith(("mp-", "mvc-")):
            mp_ids.append(text)
            continue
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and _is_structure_file(p))
            if not files:
                raise StructureError(f"no structure files (CIF, POSCAR, JSON...) in {path}")
        elif path.is_file():
            files = [path]
        else:
            raise StructureError(f"structure file or folder not found: {path}")
        for file in files:
            if file.suffix.lower() == ".json":
                structures.extend(_read_json_structures(file))
            else:
                structures.append((file.stem if file.suffix else file.name, read_structure(file)))
    if mp_ids:
        structures.extend(_fetch_materials_project(mp_ids, mp_api_key))
    return structures


# -- identity -----------------------------------------------------------------------------------


def _canonical_structure(structure: Structure) -> dict[str, Any]:
    """Setting-independent description: standard primitive cell, rounded (Å, degrees)."""
    primitive = standard_primitive(structure)
    lattice = primitive.lattice
    sites = sorted(
        (site.species_string, *[round(float(x) % 1.0, 3) % 1.0 for x in site.frac_coords])
        for site in primitive
    )
    return {
        "formula": primitive.composition.reduced_formula,
        "abc": [round(float(x), 3) for x in lattice.abc],
        "angles": [round(float(x), 2) for x in lattice.angles],
        "sites": sites,
    }


def _file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file, or of every file of a folder (relative names and contents)."""
    path = Path(path).expanduser()
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        if file.is_file():
            digest.update(file.read_bytes())
    return digest.hexdigest()


def material_key(structure: Structure, settings: dict[str, Any]) -> str:
    """Deterministic identity of (crystal, settings): 24 hex characters of a sha256.

    The crystal enters through its standard primitive cell (lattice parameters rounded
    to 1e-3 Å and 1e-2 degrees, fractional coordinates to 1e-3), so the same crystal read
    from a CIF, a POSCAR in another setting or a supercell gives the same key.

    Parameters
    ----------
    structure : Structure
        The crystal.
    settings : dict
        Everything that changes the result (JSON-serialisable). A ``supercell_matrix`` of
        ``settings["sscha"]`` applies to the cell given (phonopy's convention): it enters as
        the matrix of the standard primitive cell, so that one supercell gives one key.
    """
    sscha = settings.get("sscha")
    if isinstance(sscha, dict) and sscha.get("supercell_matrix") is not None:
        from tdphonon.structures import primitive_supercell_matrix

        matrix = primitive_supercell_matrix(structure, sscha["supercell_matrix"]).tolist()
        settings = {**settings, "sscha": {**sscha, "supercell_matrix": matrix}}
    payload = json.dumps(
        {"structure": _canonical_structure(structure), "settings": settings},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


# -- routing ------------------------------------------------------------------------------------


def _job_function_name(job: Job) -> str:
    function = job.function
    return getattr(function, "__name__", type(function).__name__)


def route_jobs(
    flow: Flow | Job,
    heavy: str | None = "gpu",
    light: str | None = "cpu",
    routing: str = "category",
    heavy_jobs: Sequence[str] = HEAVY_JOBS,
) -> None:
    """Route the jobs of ``flow`` to FireWorks workers (in place).

    Parameters
    ----------
    flow : Flow or Job
        The flow.
    heavy, light : str or None
        Category (or worker name) of force-evaluation-heavy jobs and of the others; None
        leaves those jobs to any worker.
    routing : {"category", "fworker"}
        Set FireWorks' ``_category`` (a worker pulls the jobs of its ``category``) or
        ``_fworker`` (a worker pulls the jobs naming it).
    heavy_jobs : sequence of str
        Function names of heavy jobs (default :data:`HEAVY_JOBS`).
    """
    if routing not in ("category", "fworker"):
        raise ValueError(f"routing must be 'category' or 'fworker', not {routing!r}")
    spec_key = "_category" if routing == "category" else "_fworker"
    jobs = [flow] if isinstance(flow, Job) else [job for job, _ in flow.iterflow()]
    for job in jobs:
        target = heavy if _job_function_name(job) in heavy_jobs else light
        config = dict(job.config.manager_config)
        config.pop("_category", None)
        config.pop("_fworker", None)
        if target:
            config[spec_key] = target
        job.config.manager_config = config


# -- the per-material flow ----------------------------------------------------------------------


@dataclass
class CampaignMaker(Maker):
    """The flow of one crystal of a campaign, with its identity and worker routing.

    Parameters
    ----------
    name : str
        Flow name prefix (the material's name is appended).
    sscha_maker : SSCHAMaker
        Settings of the SSCHA (model, supercell, tolerances...).
    temperatures : sequence of float
        Temperatures, K.
    finetune_data : list of str, optional
        Training data (files or folders) of a fine-tuning job run first
        (``tdphonon.flows.finetune.FineTuneMaker``); its model is used by every SSCHA job.
    finetune_maker : Maker, optional
        The fine-tuning maker (default ``FineTuneMaker()``).
    kappa : bool
        Add the lattice thermal conductivity from the SSCHA force constants
        (``tdphonon.flows.conductivity.SSCHAConductivityMaker``).
    conductivity_maker : Maker, optional
        The ``ThermalConductivityMaker`` used with ``kappa`` (its defaults otherwise).
    heavy_category, light_category : str or None
        Worker routing of heavy / light jobs (see :func:`route_jobs`).
    routing : {"category", "fworker"}
        FireWorks mechanism used for the routing.
    """

    name: str = "tdphonon"
    sscha_maker: SSCHAMaker = field(default_factory=SSCHAMaker)
    temperatures: Sequence[float] = (300.0,)
    finetune_data: list[str] | None = None
    finetune_maker: Any = None
    kappa: bool = False
    conductivity_maker: Any = None
    heavy_category: str | None = "gpu"
    light_category: str | None = "cpu"
    routing: str = "category"

    def settings(self) -> dict[str, Any]:
        """Everything that determines the results (enters :func:`material_key`)."""
        sscha = {
            f.name: getattr(self.sscha_maker, f.name)
            for f in dataclasses.fields(self.sscha_maker)
            if f.name not in ("name", "device", "batch_size", "progress")
        }
        model = PotentialSpec(sscha.get("model")).resolve().model  # as the jobs get it
        sscha["model"] = None if model is None else str(model)
        settings: dict[str, Any] = {
            "sscha": sscha,
            "temperatures": [float(t) for t in self.temperatures],
            "kappa": bool(self.kappa),
        }
        if self.finetune_data:
            settings["finetune_data"] = sorted(_file_digest(p) for p in self.finetune_data)
        if self.kappa and self.conductivity_maker is not None:
            settings["conductivity"] = _maker_settings(self.conductivity_maker)
        if self.finetune_data and self.finetune_maker is not None:
            settings["finetune"] = _maker_settings(self.finetune_maker)
        return settings

    def finetune_key(self) -> str | None:
        """Identity of the fine-tuning (data digests + fine-tuning settings), or None."""
        if not self.finetune_data:
            return None
        settings = self.settings()
        payload = {k: settings.get(k) for k in ("finetune_data", "finetune")}
        payload["base_model"] = settings["sscha"]["model"]
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def make_finetune(self) -> Job:
        """The fine-tuning job (``tdphonon.flows.finetune.FineTuneMaker``) of the campaign."""
        from tdphonon.flows.finetune import FineTuneMaker

        if not self.finetune_data:
            raise ValueError("the campaign has no fine-tuning data")
        maker = self.finetune_maker
        if maker is None:
            model = PotentialSpec(self.sscha_maker.model).resolve().model
            maker = FineTuneMaker(base_model=None if model is None else str(model))
        tune = maker.make([str(Path(p).expanduser().resolve()) for p in self.finetune_data])
        metadata = {FINETUNE_KEY_FIELD: self.finetune_key(), "material": "fine-tuning"}
        tune.update_metadata(metadata)
        route_jobs(tune, self.heavy_category, self.light_category, self.routing)
        return tune

    def make(self, structure: Structure, material: str | None = None, model: Any = None) -> Flow:
        """Flow of one crystal; every job carries the material metadata.

        Parameters
        ----------
        structure : Structure
            The crystal.
        material : str, optional
            A name (file stem, Materials Project id); the formula if None.
        model : OutputReference or str, optional
            With ``finetune_data``: the fine-tuned model to use (``tune.output.model`` of
            the campaign's fine-tuning job, see :func:`submit_flows`). If None, the flow
            begins with its own fine-tuning job (a self-contained flow, e.g. for
            ``run_locally``).

        Raises
        ------
        StructureError, UnsupportedElementError, ValueError
            From :meth:`SSCHAMaker.make` (checked before anything is submitted).
        """
        check_structure(structure)
        formula = structure.composition.reduced_formula
        material = material or formula
        temperatures = [float(t) for t in self.temperatures]
        jobs: list[Job | Flow] = []
        sscha_maker = self.sscha_maker
        if self.finetune_data:
            if model is None:
                tune = self.make_finetune()
                jobs.append(tune)
                model = tune.output.model
            sscha_maker = dataclasses.replace(sscha_maker, model=model)
        if self.kappa:
            from tdphonon.flows.conductivity import SSCHAConductivityMaker

            kwargs: dict[str, Any] = {"sscha_maker": sscha_maker}
            if self.conductivity_maker is not None:
                kwargs["conductivity_maker"] = self.conductivity_maker
            main = SSCHAConductivityMaker(**kwargs).make(structure, temperatures)
        else:
            main = sscha_maker.make(structure, temperatures)
        jobs.append(main)
        flow = Flow(jobs, output=main.output, name=f"{self.name} {material}")
        metadata = {
            KEY_FIELD: material_key(structure, self.settings()),
            "material": material,
            "formula": formula,
            "temperatures": temperatures,
            "kappa": bool(self.kappa),
        }
        flow.update_metadata(metadata)
        flow.metadata = dict(metadata)
        route_jobs(flow, self.heavy_category, self.light_category, self.routing)
        return flow


def _maker_settings(maker: Any) -> dict[str, Any]:
    from monty.json import jsanitize

    if dataclasses.is_dataclass(maker):
        return jsanitize(dataclasses.asdict(maker), strict=False, allow_bson=True)
    return {"repr": repr(maker)}


# -- submission ---------------------------------------------------------------------------------


@dataclass
class SubmissionReport:
    """What :func:`submit_flows` did.

    Attributes
    ----------
    submitted : list of (str, str)
        (material, key) of the workflows added.
    skipped : list of (str, str)
        (material, key) already on the launchpad or in the store.
    invalid : list of (str, str)
        (material, reason) of structures that could not be made into a flow.
    deferred : list of str
        Materials not submitted yet because the fine-tuning has not completed.
    finetune : dict
        ``key``, ``fw_id``, ``state`` and ``submitted`` (now) of the fine-tuning workflow.
    """

    submitted: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    finetune: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line."""
        text = (
            f"{len(self.submitted)} submitted, {len(self.skipped)} skipped (already "
            f"submitted), {len(self.invalid)} invalid"
        )
        if self.finetune:
            text += (
                f"; fine-tuning fw_id {self.finetune.get('fw_id')}: {self.finetune.get('state')}"
            )
        if self.deferred:
            text += (
                f"; {len(self.deferred)} deferred until the fine-tuning completes "
                "(submit again then)"
            )
        return text


def existing_keys(
    keys: Iterable[str], launchpad: LaunchPad | None = None, store: JobStore | None = None
) -> set[str]:
    """The keys among ``keys`` already on the launchpad (workflow metadata) or in the store."""
    keys = list(dict.fromkeys(keys))
    found: set[str] = set()
    if not keys:
        return found
    if launchpad is not None:
        for doc in launchpad.workflows.find(
            {f"metadata.{KEY_FIELD}": {"$in": keys}}, {f"metadata.{KEY_FIELD}": 1}
        ):
            found.add(doc["metadata"][KEY_FIELD])
        missing = [key for key in keys if key not in found]
        if missing:
            found.update(
                launchpad.fireworks.distinct(
                    f"spec.{KEY_FIELD}", {f"spec.{KEY_FIELD}": {"$in": missing}}
                )
            )
    if store is not None:
        found.update(
            store.docs_store.distinct(
                f"metadata.{KEY_FIELD}", {f"metadata.{KEY_FIELD}": {"$in": keys}}
            )
        )
    return found


def _to_workflow(flow: Flow, store: JobStore | None, external: bool = False) -> Workflow:
    from jobflow.managers.fireworks import flow_to_workflow

    return flow_to_workflow(
        flow, store=store, allow_external_references=external, metadata=dict(flow.metadata)
    )


def _finetune_workflow(
    maker: CampaignMaker, launchpad: LaunchPad, store: JobStore | None, dry_run: bool
) -> tuple[Any, dict[str, Any]]:
    """Find or submit the campaign's fine-tuning; (model reference or None, its status)."""
    from jobflow import OutputReference
    from jobflow.managers.fireworks import flow_to_workflow

    key = maker.finetune_key()
    query = {f"spec.{FINETUNE_KEY_FIELD}": key}
    fields = {"fw_id": 1, "state": 1, "spec._tasks.job.uuid": 1}
    doc = launchpad.fireworks.find_one(query, fields) if launchpad is not None else None
    submitted = False
    if doc is None:
        tune = maker.make_finetune()
        if dry_run:
            return None, {"key": key, "fw_id": None, "state": "not submitted (dry run)"}
        workflow = flow_to_workflow(
            tune, store=store, name=f"{maker.name} fine-tuning", metadata={FINETUNE_KEY_FIELD: key}
        )
        launchpad.add_wf(workflow)
        doc = launchpad.fireworks.find_one(query, fields)
        submitted = True
    status = {"key": key, "fw_id": doc["fw_id"], "state": doc["state"], "submitted": submitted}
    if doc["state"] != "COMPLETED":
        return None, status
    uuid = doc["spec"]["_tasks"][0]["job"]["uuid"]
    return OutputReference(uuid).model, status


def submit_flows(
    structures: Sequence[tuple[str, Structure]],
    maker: CampaignMaker,
    launchpad: LaunchPad | None,
    store: JobStore | None = None,
    batch_size: int = 200,
    skip_existing: bool = True,
    dry_run: bool = False,
    progress: bool = False,
) -> SubmissionReport:
    """Build the flows of ``structures`` and add the new ones to the launchpad, in batches.

    Idempotent: a structure whose key (:func:`material_key`) is already on the launchpad
    (or in ``store``), or earlier in ``structures``, is skipped. With fine-tuning data,
    the campaign's fine-tuning workflow is submitted first (once); the materials are
    deferred until it has completed, then submitted by a later call, each referring to
    the fine-tuned model in the JobStore. Each batch is added
    with one ``bulk_add_wfs`` call after its keys are checked, so an interrupted
    submission is resumed by running it again.

    Parameters
    ----------
    structures : sequence of (str, Structure)
        Names and crystals, e.g. from :func:`read_structures`.
    maker : CampaignMaker
        Settings of the campaign.
    launchpad : LaunchPad or None
        Where workflows go; None with ``dry_run`` only.
    store : JobStore, optional
        Written into the FireWorks specs (None: each worker's own jobflow ``JOB_STORE``,
        the usual cluster setup), and searched for finished materials.
    batch_size : int
        Workflows per database round trip.
    skip_existing : bool
        Skip keys already submitted (set False to submit duplicates deliberately).
    dry_run : bool
        Build and check everything, add nothing.
    progress : bool
        Show a progress bar.
    """
    if launchpad is None and not dry_run:
        raise ValueError("a LaunchPad is needed (or dry_run=True)")
    if store is not None:
        from tdphonon.stores import connect_store

        connect_store(store)
    report = SubmissionReport()
    model = None
    if maker.finetune_data:
        model, report.finetune = _finetune_workflow(maker, launchpad, store, dry_run)
        if model is None and not dry_run:
            report.deferred = [name for name, _ in structures]
            logger.info("campaign: %s", report.summary())
            return report
    seen: set[str] = set()
    batches = [structures[i : i + batch_size] for i in range(0, len(structures), batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(structures), desc="submit", unit="structure")
    for batch in batches:
        built: list[tuple[str, str, Flow]] = []
        for name, structure in batch:
            try:
                flow = maker.make(structure, name, model=model)
            except (ValueError, RuntimeError, KeyError) as error:  # StructureError is a ValueError
                report.invalid.append((name, f"{type(error).__name__}: {error}"))
                logger.warning("skipping %s: %s", name, error)
                continue
            built.append((name, flow.metadata[KEY_FIELD], flow))
        keys = [key for _, key, _ in built]
        already = existing_keys(keys, launchpad, store) if skip_existing else set()
        new = []
        for name, key, flow in built:
            if skip_existing and (key in already or key in seen):
                report.skipped.append((name, key))
                continue
            seen.add(key)
            new.append((name, key, flow))
        if new and not dry_run:
            workflows = [_to_workflow(flow, store, model is not None) for _, _, flow in new]
            launchpad.bulk_add_wfs(workflows)
        report.submitted.extend((name, key) for name, key, _ in new)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    logger.info("campaign: %s", report.summary())
    return report
