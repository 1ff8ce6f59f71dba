"""High-throughput campaigns: one SSCHA flow per structure, run here or on FireWorks.

A campaign is many crystals computed with the same settings. :func:`read_structures` reads
them (files, folders, JSON collections such as phonondb's ``unitcells.json.xz``,
Materials Project ids) and :class:`StructureFilter` selects some (atoms, elements, space
groups, ids, a seeded sample). :func:`run_campaign` runs them on this machine, in worker
processes that each load the potential once, into one store (resumable: finished
crystals are skipped); :func:`submit_flows` adds them to a FireWorks launchpad instead.
:class:`CampaignMaker` builds each crystal's flow: optionally a fine-tuning job first
(whose model every SSCHA job uses), then :class:`~tdphonon.flows.sscha.SSCHAMaker`'s
relax -> harmonic -> SSCHA iterations, optionally followed by the thermal conductivity. Every job carries the
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
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
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
    "FINISHED",
    "HEAVY_JOBS",
    "CampaignMaker",
    "CampaignReport",
    "StructureFilter",
    "SubmissionReport",
    "existing_keys",
    "is_collection",
    "material_key",
    "read_structures",
    "route_jobs",
    "run_campaign",
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
#: Compressed JSON collections (read as JSON once decompressed).
_COMPRESSED_JSON = (".json.xz", ".json.gz")
#: Record fields naming a structure of a collection, in order of preference.
_ID_FIELDS = ("mpid", "id", "material_id", "name")
#: Symmetry tolerance of the space group of a structure that a collection does not state, Å.
_SYMPREC = 1e-3


# -- structures ---------------------------------------------------------------------------------


def _is_structure_file(path: Path) -> bool:
    return (
        path.suffix.lower() in _STRUCTURE_SUFFIXES
        or path.name.startswith(_POSCAR_NAMES)
        or path.name.lower().endswith(_COMPRESSED_JSON)
    )


def _is_json(path: Path) -> bool:
    return path.name.lower().endswith((".json", *_COMPRESSED_JSON))


def _load_json(path: Path) -> Any:
    """The JSON content of ``path`` (``.json``, or compressed ``.json.xz`` / ``.json.gz``)."""
    import gzip
    import lzma

    name = path.name.lower()
    opener = lzma.open if name.endswith(".xz") else gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, EOFError, ValueError, lzma.LZMAError) as error:
        raise StructureError(f"cannot read {path}: {' '.join(str(error).split())}") from None


def is_collection(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file of several structures: a compressed JSON collection, or a
    JSON list or mapping that is not a single pymatgen Structure (read to tell)."""
    path = Path(path).expanduser()
    if not path.is_file() or not _is_json(path):
        return False
    if path.name.lower().endswith(_COMPRESSED_JSON):
        return True
    try:
        content = _load_json(path)
    except StructureError:
        return False  # reported by whoever reads it
    return isinstance(content, list) or not _is_record(content)


def _is_structure(item: Any) -> bool:
    return isinstance(item, dict) and "lattice" in item and "sites" in item


def _is_record(item: Any) -> bool:
    """A Structure dict, or a record holding one structure (``poscar`` or ``structure``)."""
    return _is_structure(item) or (
        isinstance(item, dict) and ("poscar" in item or isinstance(item.get("structure"), dict))
    )


@dataclass
class _Candidate:
    """A structure of the inputs, read only when needed: a collection's record states its
    id, formula, atoms and space group, so the filters run before its POSCAR is parsed."""

    name: str
    origin: str  # for messages: "<file> entry <n>"
    structure: Structure | None = None
    record: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Structure:
        if self.structure is None:
            self.structure = _record_structure(self.record, self.origin)
        return self.structure

    def n_atoms(self) -> int:
        stated = self.record.get("nat_unit")
        if self.structure is None and isinstance(stated, int) and not isinstance(stated, bool):
            return stated
        return len(self.load())

    def elements(self) -> set[str]:
        formula = self.record.get("formula")
        if self.structure is None and isinstance(formula, str) and formula:
            from pymatgen.core import Composition

            try:
                return {element.symbol for element in Composition(formula).elements}
            except (ValueError, KeyError):
                pass  # not a formula pymatgen reads: ask the structure
        return {element.symbol for element in self.load().composition.elements}

    def space_group(self) -> int:
        stated = self.record.get("spg_num")
        if self.structure is None and isinstance(stated, int) and not isinstance(stated, bool):
            return stated
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        return SpacegroupAnalyzer(self.load(), symprec=_SYMPREC).get_space_group_number()


def _record_structure(record: dict[str, Any], origin: str) -> Structure:
    """The structure of a collection entry: a Structure dict, or a record with ``poscar``
    (POSCAR text) or ``structure`` (a Structure dict)."""
    try:
        if _is_structure(record):
            return Structure.from_dict(record)
        if isinstance(record.get("structure"), dict):
            return Structure.from_dict(record["structure"])
        if isinstance(record.get("poscar"), str):
            from pymatgen.io.vasp import Poscar

            return Poscar.from_str(record["poscar"]).structure
    except Exception as error:
        message = " ".join(str(error).split())[:200]
        raise StructureError(f"{origin}: cannot read its structure: {message}") from None
    raise StructureError(
        f"{origin} is neither a pymatgen Structure nor a record with 'poscar' or 'structure'"
    )


def _json_candidates(path: Path) -> list[_Candidate]:
    """Entries of a JSON file: one Structure, a list of Structures or records, or a mapping
    of names to those (records: ``poscar`` or ``structure``, plus ``mpid``/``id``,
    ``formula``, ``spg_num``, ``nat_unit``, as in phonondb's ``unitcells.json.xz``)."""
    content = _load_json(path)
    stem = path.name
    for suffix in (*_COMPRESSED_JSON, ".json"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if isinstance(content, dict) and not _is_record(content):
        items = [(str(name), item) for name, item in content.items()]
    else:
        single = not isinstance(content, list)
        content = [content] if single else content
        items = [
            (stem if single else f"{stem}-{number}", item) for number, item in enumerate(content)
        ]
    candidates = []
    for number, (default_name, item) in enumerate(items):
        origin = f"{path} entry {number}"
        if not isinstance(item, dict):
            raise StructureError(f"{origin} is not a pymatgen Structure or a record")
        name = next((str(item[f]) for f in _ID_FIELDS if item.get(f) not in (None, "")), None)
        candidates.append(_Candidate(name or default_name, origin, record=item))
    return candidates


@dataclass(frozen=True)
class StructureFilter:
    """Which structures of the inputs a campaign takes.

    The criteria are applied in this order, all of them (and); a collection's records are
    judged on what they state (``nat_unit``, ``formula``, ``spg_num``, the id) before any
    structure is parsed.

    Parameters
    ----------
    max_atoms : int, optional
        At most this many atoms in the cell given.
    elements : sequence of str
        Keep compounds containing any of these elements (all if empty).
    exclude_elements : sequence of str
        Drop compounds containing any of these.
    spacegroups : sequence of int
        Keep these space-group numbers (1-230; all if empty). Structures whose collection
        does not state one get it from spglib (symprec 1e-3 Å).
    ids : sequence of str, optional
        Keep these names (collection ids such as ``mp-149``, file stems); ids missing
        from the inputs are logged.
    sample : int, optional
        Then keep a random sample of this many (all if fewer), in the input order: the
        first ``sample`` of a permutation drawn with ``seed``, so a larger sample with the
        same seed contains the smaller one.
    seed : int
        Seed of the sample.
    """

    max_atoms: int | None = None
    elements: Sequence[str] = ()
    exclude_elements: Sequence[str] = ()
    spacegroups: Sequence[int] = ()
    ids: Sequence[str] | None = None
    sample: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from pymatgen.core import Element

        for name in ("max_atoms", "sample"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("elements", "exclude_elements"):
            bad = [e for e in getattr(self, name) if not Element.is_valid_symbol(e)]
            if bad:
                raise ValueError(f"{name}: not element symbols: {', '.join(map(str, bad))}")
        bad = [g for g in self.spacegroups if isinstance(g, bool) or g not in range(1, 231)]
        if bad:
            raise ValueError(f"spacegroups must be numbers 1-230, got {bad}")

    def _select(self, candidates: list[_Candidate]) -> list[_Candidate]:
        selected = candidates
        if self.ids is not None:
            wanted = set(self.ids)
            selected = [c for c in selected if c.name in wanted]
            missing = wanted - {c.name for c in selected}
            if missing:
                logger.warning(
                    "%d of the ids asked for are not in the inputs: %s",
                    len(missing),
                    ", ".join(sorted(missing)[:10]) + (" ..." if len(missing) > 10 else ""),
                )
        if self.elements:
            wanted = set(self.elements)
            selected = [c for c in selected if c.elements() & wanted]
        if self.exclude_elements:
            unwanted = set(self.exclude_elements)
            selected = [c for c in selected if not c.elements() & unwanted]
        if self.max_atoms is not None:
            selected = [c for c in selected if c.n_atoms() <= self.max_atoms]
        if self.spacegroups:
            groups = set(self.spacegroups)
            selected = [c for c in selected if c.space_group() in groups]
        if self.sample is not None and self.sample < len(selected):
            import random

            order = list(range(len(selected)))
            random.Random(self.seed).shuffle(order)
            selected = [selected[i] for i in sorted(order[: self.sample])]
        return selected


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


def _is_materials_project_id(text: str) -> bool:
    return not Path(text).expanduser().exists() and text.lower().startswith(("mp-", "mvc-"))


def read_structures(
    sources: Iterable[str | os.PathLike],
    mp_api_key: str | None = None,
    selection: StructureFilter | None = None,
) -> list[tuple[str, Structure]]:
    """Read the structures of a campaign.

    Parameters
    ----------
    sources : iterable of str or path
        Files (CIF, POSCAR/CONTCAR, ``*.vasp``, any format ASE reads), JSON collections
        (``.json``, ``.json.xz``, ``.json.gz``: one pymatgen Structure, a list of them, a
        list of records with ``poscar`` or ``structure`` and an ``mpid``/``id`` naming
        each, such as phonondb's ``unitcells.json.xz``, or a mapping of names to either),
        folders (every such file in them, not recursive, sorted by name), or Materials
        Project ids (``mp-149``; need the ``mp-api`` client and an API key).
    mp_api_key : str, optional
        Materials Project API key; default ``$MP_API_KEY`` (or ``$PMG_MAPI_KEY``).
    selection : StructureFilter, optional
        Which of them to keep (records of collections are judged before they are parsed).

    Returns
    -------
    list of (str, Structure)
        A name for each structure (file stem, the collection's id, ``<stem>-<n>`` for a
        list without ids, or the Materials Project id) and the structure.

    Raises
    ------
    StructureError
        A file that cannot be read, an empty folder, an unknown id, nothing left after
        ``selection``.
    """
    candidates: list[_Candidate] = []
    mp_ids: list[str] = []
    for source in sources:
        text = str(source)
        path = Path(text).expanduser()
        if _is_materials_project_id(text):
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
            if _is_json(file):
                candidates.extend(_json_candidates(file))
            else:
                name = file.stem if file.suffix else file.name
                candidates.append(_Candidate(name, str(file), read_structure(file)))
    if mp_ids:
        for name, structure in _fetch_materials_project(mp_ids, mp_api_key):
            candidates.append(_Candidate(name, name, structure))
    if selection is not None:
        total = len(candidates)
        candidates = selection._select(candidates)
        if not candidates:
            raise StructureError(f"none of the {total} structures given passes the filters")
        logger.info("%d of %d structures selected", len(candidates), total)
    return [(candidate.name, candidate.load()) for candidate in candidates]


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


# -- campaigns on this machine ------------------------------------------------------------------

#: Statuses (:meth:`tdphonon.query.CampaignResults.materials`) of a finished material: a rerun
#: of the campaign skips it.
FINISHED = ("completed", "not converged")

#: Runs of one material that may end with its worker process dying (out of memory, a
#: crash in native code) before it is reported failed: the other materials running in
#: the same pool when it died are run again.
_MAX_ATTEMPTS = 2


@dataclass
class _Task:
    """One material to run: its name, structure and identity key."""

    name: str
    structure: Structure
    key: str
    replace: bool = False  # the store holds an earlier, unfinished or failed, run of it


@dataclass
class _Outcome:
    """What one material's run gives back to the process that writes the store."""

    status: str
    reason: str | None = None
    failure: str | None = None  # the kind of failure: "<stage>: <error type>"
    wall_s: float = 0.0
    cpu_s: float = 0.0  # CPU time of the process that ran it (all its threads)
    docs: list[dict[str, Any]] = field(default_factory=list)
    blobs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def _memory_store() -> JobStore:
    """A private in-memory JobStore for one material's run: the embedded store's
    collections and indexes in memory (:data:`~tdphonon.sqlite_store.IN_MEMORY`).

    Writes 2.5x and reads 2x faster than maggma's ``MemoryStore`` for an SSCHA population
    (mongomock copies every document it stores and returns).
    """
    from tdphonon.sqlite_store import IN_MEMORY
    from tdphonon.stores import sqlite_job_store

    store = sqlite_job_store(IN_MEMORY)
    store.connect()
    return store


def _run_material(maker: CampaignMaker, task: _Task) -> _Outcome:
    """Run one material's flow into a private in-memory store and return its documents.

    Runs in a worker process (or in the calling one): whatever fails is caught and
    reported in the outcome, so the campaign goes on. A failed job's
    :class:`~tdphonon.schemas.JobFailureDoc` is among the documents (stored, so that
    ``tdphonon query`` shows the reason); a structure that cannot be made into a flow
    (e.g. an element the potential does not know) or a run that crashed stores nothing.
    """
    from tdphonon.query import CampaignResults
    from tdphonon.stores import run_flow

    start, start_cpu = time.perf_counter(), time.process_time()

    def failed(kind: str, error: BaseException) -> _Outcome:
        reason = f"{type(error).__name__}: {_one_line(error)}"
        return _Outcome(
            "failed",
            reason,
            f"{kind}: {type(error).__name__}",
            time.perf_counter() - start,
            time.process_time() - start_cpu,
        )

    try:
        flow = maker.make(task.structure, task.name)
    except Exception as error:  # StructureError, UnsupportedElementError, ValueError ...
        return failed("invalid", error)
    store = _memory_store()
    try:
        run_flow(flow, store, ensure_success=False)  # a failed job stores its failure
        rows = [r for r in CampaignResults(store, retries=1).materials() if r["key"] == task.key]
    except Exception as error:  # not a job's failure: the machinery
        return failed("crashed", error)
    row = rows[0] if rows else {"status": "running", "reason": None}
    outcome = _Outcome(row["status"], row["reason"])
    if outcome.status == "failed":
        first = next(
            iter(
                store.query(
                    {"output.@class": "JobFailureDoc"},
                    properties=["output.stage", "output.error_type"],
                    sort={"completed_at": 1},
                )
            ),
            None,
        )
        output = (first or {}).get("output") or {}
        outcome.failure = f"{output.get('stage', 'job')}: {output.get('error_type', 'error')}"
    elif outcome.status not in FINISHED:  # no failure stored, yet not every result
        outcome.status, outcome.failure = "failed", "incomplete: flow"
        outcome.reason = "the flow ended before every temperature finished"
    outcome.docs = [_without_id(doc) for doc in store.docs_store.query({})]
    outcome.blobs = {
        name: [_without_id(doc) for doc in data.query({})]
        for name, data in store.additional_stores.items()
    }
    outcome.wall_s = time.perf_counter() - start
    outcome.cpu_s = time.process_time() - start_cpu
    return outcome


def _without_id(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id"}


def _write_material(store: JobStore, task: _Task, outcome: _Outcome) -> None:
    """Write one material's documents into ``store`` (the only process that writes it).

    An earlier run of the same material (failed, or stopped part-way) is removed first, so
    that its documents do not decide the status of the new one. The arrays go in before
    the documents that refer to them.
    """
    from tdphonon.query import _blob_references

    if task.replace and outcome.docs:  # (a crash stores nothing and keeps what was there)
        criteria = {f"metadata.{KEY_FIELD}": task.key}
        references: list[tuple[str, str]] = []
        for doc in store.docs_store.query(criteria, properties=["output"]):
            _blob_references(doc.get("output"), references)
        for name, data in store.additional_stores.items():
            blobs = [blob for store_name, blob in references if store_name == name]
            if blobs:
                data.remove_docs({"blob_uuid": {"$in": blobs}})
        store.docs_store.remove_docs(criteria)
    for name, blobs in outcome.blobs.items():
        if blobs:
            store.additional_stores[name].update(blobs, key="blob_uuid")
    if outcome.docs:
        store.docs_store.update(outcome.docs, key=["uuid", "index"])


#: Seconds between a worker's checks that the campaign's process still runs.
PARENT_CHECK_INTERVAL_S = 2.0


def _exit_with_parent(parent: int, interval: float = PARENT_CHECK_INTERVAL_S) -> None:
    """End this process soon after its parent (pid ``parent``) ends, however it ended.

    A campaign killed by its batch system (SIGTERM at the wall-time limit, or SIGKILL) has
    no chance to stop its workers, and a worker computes its material to the end for
    nobody. A daemon thread polls the parent's pid and exits the worker when it is no
    longer ``parent`` (given by the parent: it may be gone before this runs).
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _start_worker(sscha_maker: SSCHAMaker, threads: int, parent: int) -> None:
    """Initializer of a worker process: imports and the model, once for all its materials.

    The potential goes into the per-process calculator cache
    (:func:`tdphonon.potentials.factory.cached_calculator`) under the spec the jobs use;
    BLAS runs on one thread (small matrices) and torch on ``threads``. The worker ends
    when the campaign's process (pid ``parent``) does (:func:`_exit_with_parent`).
    """
    import sys

    _exit_with_parent(parent)

    from threadpoolctl import threadpool_limits

    from tdphonon.library_warnings import ignore_library_warnings

    ignore_library_warnings()  # as the command does
    threadpool_limits(limits=1, user_api="blas")
    sscha_maker.potential().calculator()  # as SSCHAMaker.make checks it, then as jobs use it
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


@dataclass
class CampaignReport:
    """What :func:`run_campaign` did, one row per structure given.

    Attributes
    ----------
    rows : list of dict
        ``material`` (the name), ``formula``, ``key``, ``status`` (``completed``, ``not
        converged``, ``failed``, ``duplicate``), ``reason`` (why it failed or did not
        converge), ``failure`` (the kind of failure, ``<stage>: <error type>``, e.g.
        ``harmonic: NonFiniteForcesError``, ``invalid: UnsupportedElementError`` for a
        structure that could not be made into a flow), ``skipped`` (True: found in the
        store, not run again), ``wall_s`` and ``cpu_s`` (s, of this run: its wall time,
        and the CPU time of the process that ran it, all threads; core-seconds).
    workers : int
        Processes that ran the materials.
    wall_s : float
        Duration of the campaign, s.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    workers: int = 1
    wall_s: float = 0.0

    def counts(self) -> dict[str, int]:
        """Number of structures per status, and ``skipped`` (found in the store)."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        counts["skipped"] = sum(bool(row["skipped"]) for row in self.rows)
        return counts

    def failures(self) -> dict[str, list[dict[str, Any]]]:
        """The failed rows by kind of failure (most frequent first)."""
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows:
            if row["status"] == "failed":
                kind = row["failure"] or "failed"
                if row["skipped"]:
                    kind = "failed in an earlier run (rerun with --retry-failed)"
                groups.setdefault(kind, []).append(row)
        return dict(sorted(groups.items(), key=lambda item: -len(item[1])))

    def summary(self, examples: int = 5) -> str:
        """A few lines: how many finished, were skipped and failed, and why."""
        counts = self.counts()
        done = counts.get("completed", 0) + counts.get("not converged", 0)
        skipped_done = sum(r["skipped"] and r["status"] in FINISHED for r in self.rows)
        minutes, seconds = divmod(self.wall_s, 60)
        lines = [
            f"campaign: {len(self.rows)} structures, {self.workers} worker(s), "
            f"{int(minutes)} min {seconds:.0f} s",
            f"  {done} done ({counts.get('completed', 0)} completed, "
            f"{counts.get('not converged', 0)} not converged; {skipped_done} skipped: done "
            "before)",
            f"  {counts.get('failed', 0)} failed",
        ]
        if counts.get("duplicate"):
            lines.append(f"  {counts['duplicate']} duplicates (same crystal and settings)")
        for kind, rows in self.failures().items():
            names = ", ".join(r["material"] for r in rows[:examples])
            more = f", ... ({len(rows) - examples} more)" if len(rows) > examples else ""
            lines.append(f"    {kind}: {len(rows)} ({names}{more})")
            lines.append(f"      e.g. {rows[0]['material']}: {rows[0]['reason']}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The rows and the totals, for JSON."""
        return {
            "totals": {**self.counts(), "structures": len(self.rows)},
            "failures": {kind: len(rows) for kind, rows in self.failures().items()},
            "workers": self.workers,
            "wall_s": self.wall_s,
            "rows": self.rows,
        }


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run_campaign(
    structures: Sequence[tuple[str, Structure]],
    maker: CampaignMaker,
    store: JobStore,
    workers: int | None = None,
    retry_failed: bool = False,
    progress: bool = False,
) -> CampaignReport:
    """Run a campaign on this machine, in parallel processes, into ``store``.

    Resumable: a structure whose key (:func:`material_key`) is finished in the store
    (``completed`` or ``not converged``, :meth:`tdphonon.query.CampaignResults.materials`)
    is skipped, and so is one that failed unless ``retry_failed``; one that stopped
    part-way (an interrupted campaign) is run again. Each worker process loads the
    potential once and runs one material at a time into a private in-memory JobStore;
    this process alone writes ``store``, a material's documents at once when it
    finishes (so several processes never write one embedded database, and an
    interrupted material leaves nothing behind). A failed material is recorded with its
    reason (a :class:`~tdphonon.schemas.JobFailureDoc` in the store, see
    :func:`tdphonon.stores.run_flow`) and the campaign goes on.

    Parameters
    ----------
    structures : sequence of (str, Structure)
        Names and crystals, e.g. from :func:`read_structures`.
    maker : CampaignMaker
        Settings of the campaign (without fine-tuning data: fine-tune first, then give
        the model; FireWorks routing fields are not used here).
    store : JobStore
        Where the results go (e.g. :func:`tdphonon.stores.get_store`).
    workers : int, optional
        Worker processes (default: one per core, at most one per material); 1 runs the
        materials here, one after the other.
    retry_failed : bool
        Run again the materials that failed in an earlier run.
    progress : bool
        A progress bar over the materials (stderr), with the time left.

    Returns
    -------
    CampaignReport

    Raises
    ------
    ModelLoadError
        The potential cannot be loaded (checked here, before any worker starts).
    ValueError
        ``workers`` < 1, or fine-tuning data in ``maker``.
    """
    from tdphonon.stores import connect_store

    if maker.finetune_data:
        raise ValueError(
            "run_campaign runs no fine-tuning: fine-tune first ('tdphonon finetune') and "
            "give the model"
        )
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    start = time.perf_counter()
    maker.sscha_maker.potential()  # a model that does not load: one error, now
    connect_store(store)
    settings = maker.settings()
    rows: list[dict[str, Any]] = []
    tasks: list[tuple[_Task, dict[str, Any]]] = []
    seen: dict[str, str] = {}
    for name, structure in structures:
        row = {
            "material": name,
            "formula": structure.composition.reduced_formula,
            "key": None,
            "status": None,
            "reason": None,
            "failure": None,
            "skipped": False,
            "wall_s": 0.0,
            "cpu_s": 0.0,
        }
        rows.append(row)
        try:
            row["key"] = material_key(structure, settings)
        except (ValueError, RuntimeError, KeyError) as error:  # e.g. a disordered structure
            row.update(
                status="failed",
                reason=f"{type(error).__name__}: {_one_line(error)}",
                failure=f"invalid: {type(error).__name__}",
            )
            continue
        if row["key"] in seen:
            row.update(
                status="duplicate", reason=f"same crystal and settings as {seen[row['key']]}"
            )
            continue
        seen[row["key"]] = name
        tasks.append((_Task(name, structure, row["key"]), row))

    known = existing_keys(seen, store=store)
    statuses: dict[str, dict[str, Any]] = {}
    if known:
        from tdphonon.query import CampaignResults

        statuses = {
            r["key"]: r for r in CampaignResults(store, retries=1).materials() if r["key"] in known
        }
    to_run: list[tuple[_Task, dict[str, Any]]] = []
    for task, row in tasks:
        stored = statuses.get(task.key)
        if stored is not None and (
            stored["status"] in FINISHED or (stored["status"] == "failed" and not retry_failed)
        ):
            row.update(status=stored["status"], reason=stored["reason"], skipped=True)
            continue
        task.replace = task.key in known
        to_run.append((task, row))
    skipped = len(tasks) - len(to_run)
    if skipped:
        logger.info("campaign: %d of %d materials are in the store already", skipped, len(tasks))

    n_workers = min(workers or _available_cores(), max(1, len(to_run)))
    bar = None
    if progress and to_run:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(to_run), desc="campaign", unit="material", dynamic_ncols=True)
    failed = 0

    def finish(task: _Task, row: dict[str, Any], outcome: _Outcome) -> None:
        nonlocal failed
        _write_material(store, task, outcome)
        row.update(
            status=outcome.status,
            reason=outcome.reason,
            failure=outcome.failure,
            wall_s=round(outcome.wall_s, 2),
            cpu_s=round(outcome.cpu_s, 2),
        )
        failed += outcome.status == "failed"
        if bar is not None:
            bar.set_postfix_str(f"failed {failed}" if failed else task.name, refresh=False)
            bar.update(1)

    try:
        if n_workers == 1:
            with _quiet_material_logs():
                for task, row in to_run:
                    finish(task, row, _run_material(maker, task))
        else:
            _run_in_pool(to_run, maker, n_workers, finish)
    finally:
        if bar is not None:
            bar.close()
    return CampaignReport(rows, n_workers if to_run else 0, time.perf_counter() - start)


def _run_in_pool(
    to_run: list[tuple[_Task, dict[str, Any]]],
    maker: CampaignMaker,
    workers: int,
    finish: Any,
) -> None:
    """Run the tasks in ``workers`` spawned processes; ``finish(task, row, outcome)`` each.

    A worker that dies (out of memory, a crash in native code) breaks the pool: the
    materials it held are run again in a new pool, and reported failed once they have
    been in :data:`_MAX_ATTEMPTS` broken pools.
    """
    import multiprocessing
    from collections import deque
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, _available_cores() // workers)
    queue = deque(to_run)
    attempts: dict[str, int] = {}
    context = multiprocessing.get_context("spawn")  # torch is not fork-safe
    while queue:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(maker.sscha_maker, threads, os.getpid()),
        )
        running: dict[Any, tuple[_Task, dict[str, Any]]] = {}
        broken = False
        try:
            while (queue and not broken) or running:
                while queue and not broken and len(running) < 2 * workers:
                    task, row = queue.popleft()
                    attempts[task.key] = attempts.get(task.key, 0) + 1
                    running[pool.submit(_run_material, maker, task)] = (task, row)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task, row = running.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool as error:
                        broken = True
                        if attempts[task.key] < _MAX_ATTEMPTS:
                            queue.appendleft((task, row))
                            continue
                        outcome = _Outcome(
                            "failed",
                            f"the worker process died (out of memory?): {_one_line(error)}",
                            "crashed: worker process died",
                        )
                    except Exception as error:  # e.g. an outcome that cannot be sent back
                        outcome = _Outcome(
                            "failed",
                            f"{type(error).__name__}: {_one_line(error)}",
                            f"crashed: {type(error).__name__}",
                        )
                    finish(task, row, outcome)
        except KeyboardInterrupt:  # stop the materials running now (no public way before 3.14)
            broken = True
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            raise
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)


@contextmanager
def _quiet_material_logs() -> Iterator[None]:
    """Leave out the per-material INFO lines of the jobs (as in worker processes)."""
    loggers = [logging.getLogger(name) for name in ("tdphonon", "atomate2", "jobflow")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)
