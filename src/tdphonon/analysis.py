"""What drives anharmonicity across a campaign: its table, structure features, trends, a model.

* :func:`campaign_table`: one row per compound and temperature from any JobStore
  (:class:`~tdphonon.query.CampaignResults`): status, reason, and the measures of
  :class:`~tdphonon.schemas.SSCHATemperatureDoc` (``sigma_a``, ``mean_relative_shift``...;
  NaN where the compound failed or has not finished that temperature).
* :func:`campaign_structures`: the relaxed (standard primitive) cell of each compound.
* :class:`StructureFeaturizer` / :func:`structure_features`: descriptors of each crystal
  from pymatgen: statistics of elemental properties over the composition (electronegativity,
  atomic radius, mass, row, group, Mendeleev number, melting point, molar volume), fractions
  of element families (alkali...), density, volume and packing fraction, space group,
  prototype (anonymized formula + space group), and the local environments of pymatgen's
  CrystalNN (coordination numbers, bond lengths and their ratio to the sum of atomic radii,
  bond electronegativity differences, octahedral sites, corner-sharing octahedra, a
  perovskite-derived flag). Each crystal is featurized once (in-memory cache).
* :func:`trends`: mean score per element, prototype and space group.
* :func:`driver_model`: a scikit-learn random forest (or gradient boosting) predicting a
  measure from the features; grouped K-fold cross-validation (all temperatures of a compound
  in one fold) against a mean-value baseline; permutation importance on the held-out folds
  (and mean absolute SHAP values where ``shap`` is installed).
* :func:`export_campaign` / :func:`read_campaign`: a campaign's table and crystals as one
  portable JSON file (``tdphonon analyze --export``), so campaigns run in pieces on several
  machines or stores are analysed together (``tdphonon analyze --from``).
* :func:`analyze`: all of it for a store and/or exported files;
  :meth:`CampaignAnalysis.summary` is the JSON of ``tdphonon analyze --json``.

matminer is not used: every release of matminer that installs with tdphonon's pinned pandas
(3.x) is broken (0.8: ``pkg_resources``), the others require pandas < 3. The elemental
statistics here are those of matminer's ``ElementProperty`` (mean, min, max, range, average
deviation, fraction-weighted) on pymatgen's element data.

Units: Å, Å³, g/cm³, amu, K; the targets are dimensionless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from jobflow import JobStore
    from pymatgen.core import Structure

__all__ = [
    "ELEMENT_PROPERTIES",
    "ESTIMATORS",
    "FAMILIES",
    "FEATURE_NAMES",
    "SUMMARY_COLUMNS",
    "TARGETS",
    "CampaignAnalysis",
    "DriverModel",
    "InsufficientDataError",
    "StructureFeaturizer",
    "analyze",
    "analyze_table",
    "campaign_structures",
    "campaign_table",
    "driver_model",
    "export_campaign",
    "model_features",
    "read_campaign",
    "structure_features",
    "trends",
]

logger = logging.getLogger(__name__)

#: Measures that :func:`driver_model` can predict (fields of SSCHATemperatureDoc).
TARGETS = ("sigma_a", "mean_relative_shift")

#: Estimators of :func:`driver_model`.
ESTIMATORS = ("random_forest", "gradient_boosting")

#: pymatgen ``Element`` attribute -> feature stem (unit): the elemental properties whose
#: statistics over the composition are features.
ELEMENT_PROPERTIES = {
    "X": "electronegativity",  # Pauling
    "atomic_radius": "atomic_radius",  # Å (empirical)
    "atomic_mass": "atomic_mass",  # amu
    "row": "row",
    "group": "group",
    "mendeleev_no": "mendeleev_number",
    "melting_point": "melting_point",  # K
    "molar_volume": "molar_volume",  # cm³/mol
}

#: Statistics of each elemental property over the composition (atomic fractions as weights):
#: as matminer's ElementProperty (``avg_dev``: mean absolute deviation from the mean).
STATISTICS = ("mean", "min", "max", "range", "avg_dev")

#: Element families whose atomic fraction is a feature: name -> pymatgen ``Element`` flag.
FAMILIES = {
    "alkali": "is_alkali",
    "alkaline_earth": "is_alkaline",
    "transition_metal": "is_transition_metal",
    "post_transition_metal": "is_post_transition_metal",
    "rare_earth": "is_rare_earth",
    "metalloid": "is_metalloid",
    "chalcogen": "is_chalcogen",
    "halogen": "is_halogen",
}

_COMPOSITION_FEATURES = (
    "n_elements",
    *(f"{stat}_{stem}" for stem in ELEMENT_PROPERTIES.values() for stat in STATISTICS),
    *(f"{family}_fraction" for family in FAMILIES),
)
_STRUCTURE_FEATURES = ("n_sites", "density", "volume_per_atom", "packing_fraction")
_SYMMETRY_FEATURES = (
    "spacegroup_number",
    "spacegroup_symbol",
    "crystal_system",
    "anonymized_formula",
    "prototype",
)
_LOCAL_FEATURES = (
    "mean_coordination",
    "min_coordination",
    "max_coordination",
    "mean_bond_length",
    "min_bond_length",
    "mean_bond_length_ratio",
    "max_bond_length_ratio",
    "mean_bond_electronegativity_difference",
    "max_bond_electronegativity_difference",
    "octahedral_site_fraction",
    "corner_sharing_octahedra_fraction",
    "perovskite_derived",
)

#: Every column of :func:`structure_features`, by group (a group that fails on a crystal
#: gives NaN / None for its columns).
FEATURE_NAMES = (
    *_COMPOSITION_FEATURES,
    *_STRUCTURE_FEATURES,
    *_SYMMETRY_FEATURES,
    *_LOCAL_FEATURES,
)

#: Text columns of :func:`structure_features` (for trends, not for the model).
CATEGORICAL_FEATURES = ("spacegroup_symbol", "crystal_system", "anonymized_formula", "prototype")

#: A site is the centre of an octahedron with 6 CrystalNN neighbours, all more
#: electronegative than it (Pauling), and pymatgen's octahedral order parameter
#: (``LocalStructOrderParams`` "oct", 1 for a perfect octahedron) at least this.
OCTAHEDRAL_ORDER_MIN = 0.5
#: A crystal is perovskite-derived when at least this fraction of the ligands of its
#: octahedra are shared by exactly two octahedra (corner sharing: 1 in perovskites,
#: double perovskites and ReO3; 2/3 in n = 1 Ruddlesden-Popper phases; 0 in rock salt,
#: whose anions have six octahedral neighbours).
PEROVSKITE_CORNER_FRACTION = 0.5
#: Two octahedral centres share a ligand when both are within this factor of the
#: centre-ligand distance of it.
_SHARED_LIGAND_TOLERANCE = 1.2

#: Modules of pymatgen's local environments (whose routine warnings are silenced).
_LOCAL_ENV = r"pymatgen\.(core|analysis)\.local_env"

#: Values (rows x features) of the shuffled copies predicted at once (about 40 MB).
_PERMUTATION_BATCH = 5_000_000

#: Status of the rows :func:`driver_model` learns from (finite target as well).
MODEL_STATUSES = ("completed",)


# -- the table ------------------------------------------------------------------------------------


def campaign_table(store: JobStore, launchpad: Any = None) -> pd.DataFrame:
    """One row per compound and temperature of the campaign in ``store``.

    Parameters
    ----------
    store : JobStore
        Embedded or MongoDB (connected here, :func:`tdphonon.stores.connect_store`).
    launchpad : LaunchPad, optional
        Adds FireWorks states (waiting, fizzled) as :class:`~tdphonon.query.CampaignResults`.

    Returns
    -------
    pandas.DataFrame
        ``id`` (the compound's key in the store: unique per crystal and settings),
        ``material`` (its name), ``formula``, ``temperature`` (K), ``status``, ``reason``,
        then the columns of :meth:`tdphonon.query.CampaignResults.table`: the summary of
        :class:`~tdphonon.schemas.SSCHATemperatureDoc` (``sigma_a``, ``sigma_a_error``,
        ``mean_relative_shift``, ``free_energy``...). Every expected temperature of a
        compound has its row: one that did not finish (failed, running) has NaN measures.
        A compound with no known temperature has one row, temperature NaN. Empty when the
        store holds no tdphonon results.
    """
    import pandas as pd

    from tdphonon.query import CampaignResults
    from tdphonon.schemas import SSCHATemperatureDoc

    results = CampaignResults(store, launchpad)
    table = results.table()
    measures = list(SSCHATemperatureDoc.scalar_keys())
    columns = ["id", "material", "formula", "temperature", "status", "reason"]
    if table.empty:
        return pd.DataFrame(columns=columns + [m for m in measures if m not in columns])
    table = table.rename(columns={"key": "id"})
    for name in measures:
        if name not in table:
            table[name] = None
    done = {
        (key, float(t))
        for key, t in zip(table["id"], table["temperature"], strict=True)
        if t is not None and not _isnan(t)
    }
    rows = []
    for material in results.materials():
        missing = [
            float(t)
            for t in material["temperatures"] or []
            if (material["key"], float(t)) not in done
        ]
        rows.extend(
            {
                "id": material["key"],
                "material": material["material"],
                "formula": material["formula"],
                "status": material["status"],
                "reason": material["reason"],
                "temperature": t,
            }
            for t in missing
        )
    expanded = {row["id"] for row in rows}
    # a compound's temperature-less row is replaced by one row per expected temperature
    keep = ~(table["id"].isin(expanded) & table["temperature"].isna())
    table = pd.concat([table[keep], pd.DataFrame(rows)], ignore_index=True) if rows else table
    numeric = [
        key
        for name, key in SSCHATemperatureDoc.summary_keys().items()
        if _is_number(SSCHATemperatureDoc.model_fields[name].annotation)
    ]
    for name in ["temperature", *numeric]:
        if name in table and table[name].dtype == object:
            table[name] = pd.to_numeric(
                table[name].map(lambda v: np.nan if v is None else v), errors="coerce"
            )
    table = table.sort_values(["formula", "id", "temperature"], na_position="last")
    ordered = columns + [c for c in table.columns if c not in columns]
    return table[ordered].reset_index(drop=True)


def _is_number(annotation: Any) -> bool:
    """Whether a field's values are numbers (``float``, ``int``, optionally None)."""
    from typing import get_args

    kinds = set(get_args(annotation) or (annotation,)) - {type(None)}
    return bool(kinds) and kinds <= {float, int}


def _isnan(value: Any) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False


#: Output classes that hold a compound's crystal, best first: the relaxed standard
#: primitive cell of the harmonic and SSCHA documents, then the relaxation's output (for a
#: compound that failed before its harmonic job finished).
_STRUCTURE_SOURCES = ("HarmonicPhononDoc", "SSCHATemperatureDoc", "ForceFieldTaskDocument")


def campaign_structures(store: JobStore) -> dict[str, Structure]:
    """The crystal of each compound in ``store``: id (as :func:`campaign_table`) -> Structure.

    The standard primitive cell of its harmonic or SSCHA document, else the relaxed
    structure (atomate2's ``ForceFieldTaskDocument``); compounds that stored none (a
    failure before the relaxation finished) are left out. One query on the indexed
    ``output.@class``.
    """
    from pymatgen.core import Structure

    from tdphonon.query import CampaignResults
    from tdphonon.stores import FINETUNE_KEY_FIELD, connect_store

    store = connect_store(store)
    found: dict[str, tuple[int, dict[str, Any]]] = {}
    properties = ["uuid", "index", "metadata", "hosts", "output.@class", "output.structure"]
    criteria = {"output.@class": {"$in": list(_STRUCTURE_SOURCES)}}
    for doc in store.query(criteria, properties=properties):
        output = doc.get("output") or {}
        structure = output.get("structure")
        if not isinstance(structure, dict) or (doc.get("metadata") or {}).get(FINETUNE_KEY_FIELD):
            continue
        rank = _STRUCTURE_SOURCES.index(output.get("@class"))
        key = CampaignResults._group(doc)  # the grouping of campaign_table's rows
        if key not in found or rank < found[key][0]:
            found[key] = (rank, structure)
    structures = {}
    for key, (_, data) in found.items():
        try:
            structures[key] = Structure.from_dict(data)
        except Exception as error:  # a malformed document: no features for it
            logger.warning("compound %s: unreadable structure (%s)", key, error)
    return structures


#: ``format`` of the files of :func:`export_campaign`.
EXPORT_FORMAT = "tdphonon-campaign"
EXPORT_VERSION = 1

#: Status preference when a compound and temperature occur in several sources (best first).
_STATUS_RANK = ("completed", "not converged", "failed", "running", "waiting", "fizzled")


def export_campaign(store: JobStore, path: str | Path, launchpad: Any = None) -> int:
    """Write the campaign in ``store`` to one portable JSON file; the rows written.

    The file holds :func:`campaign_table` (one row per compound and temperature: status,
    reason, every scalar measure, the labelled frequencies as JSON strings) and each
    compound's crystal (:func:`campaign_structures`), a few kB per compound: the
    per-compound summary of a campaign without its store (snapshots, forces and force
    constants stay there). ``.json.xz`` / ``.json.gz`` are compressed. :func:`read_campaign`
    reads it back; :func:`analyze` takes such files with or instead of a store.
    """
    from monty.serialization import dumpfn

    table = campaign_table(store, launchpad)
    structures = campaign_structures(store)
    ids = set(table["id"])
    dumpfn(
        {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "rows": _records(table),
            "structures": {key: s.as_dict() for key, s in structures.items() if key in ids},
        },
        str(path),
    )
    return len(table)


def read_campaign(paths: Iterable[str | Path]) -> tuple[pd.DataFrame, dict[str, Structure]]:
    """The table and crystals of files written by :func:`export_campaign`, merged.

    A compound and temperature present in several files keeps its best row (completed,
    then not converged, failed, running...; the later file on a tie), so files of a campaign run in pieces,
    or rerun, combine into one table.

    Raises
    ------
    ValueError
        A file that cannot be read or is not such an export (one line naming it).
    """
    import pandas as pd
    from monty.serialization import loadfn
    from pymatgen.core import Structure

    frames, structures = [], {}
    for path in paths:
        try:
            content = loadfn(str(path), cls=None)
        except Exception as error:
            raise ValueError(f"{path}: cannot read it: {_one_line(error)}") from None
        if not isinstance(content, dict) or content.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{path}: not a campaign export of tdphonon analyze --export")
        frames.append(pd.DataFrame(content.get("rows") or []))
        for key, data in (content.get("structures") or {}).items():
            structures[key] = Structure.from_dict(data)
    return _best_rows(frames), structures


def _best_rows(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Tables of :func:`campaign_table` concatenated, one row per compound and temperature
    (the best status; the later table on a tie), sorted as :func:`campaign_table`."""
    import pandas as pd

    frames = [f for f in frames if not f.empty]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if table.empty:
        return table
    rank = {status: i for i, status in enumerate(_STATUS_RANK)}
    table["_rank"] = [rank.get(s, len(rank)) for s in table["status"]]
    table["_t"] = pd.to_numeric(table["temperature"], errors="coerce").fillna(-1.0)
    table["_order"] = range(len(table))
    table = (
        table.sort_values(["id", "_t", "_rank", "_order"], ascending=[True, True, True, False])
        .drop_duplicates(["id", "_t"])
        .drop(columns=["_rank", "_t", "_order"])
    )
    # a compound with a finished temperature does not keep a temperature-less row
    has_t = set(table.loc[table["temperature"].notna(), "id"])
    table = table[table["temperature"].notna() | ~table["id"].isin(has_t)]
    table = table.sort_values(["formula", "id", "temperature"], na_position="last")
    return table.fillna(np.nan).reset_index(drop=True)  # JSON's null: NaN, as campaign_table


# -- features -------------------------------------------------------------------------------------


def _element_value(element: Any, attribute: str) -> float:
    try:
        value = getattr(element, attribute)
    except (AttributeError, ValueError, KeyError):
        return math.nan
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _composition_features(structure: Structure) -> dict[str, Any]:
    composition = structure.composition.fractional_composition
    elements = list(composition.elements)
    weights = np.array([composition[e] for e in elements], dtype=float)
    features: dict[str, Any] = {"n_elements": len(elements)}
    for attribute, stem in ELEMENT_PROPERTIES.items():
        values = np.array([_element_value(e, attribute) for e in elements])
        if not np.isfinite(values).all():
            for stat in STATISTICS:
                features[f"{stat}_{stem}"] = math.nan
            continue
        mean = float(weights @ values)
        features[f"mean_{stem}"] = mean
        features[f"min_{stem}"] = float(values.min())
        features[f"max_{stem}"] = float(values.max())
        features[f"range_{stem}"] = float(values.max() - values.min())
        features[f"avg_dev_{stem}"] = float(weights @ np.abs(values - mean))
    for family, flag in FAMILIES.items():
        features[f"{family}_fraction"] = float(
            sum(w for e, w in zip(elements, weights, strict=True) if getattr(e, flag, False))
        )
    return features


def _structure_features(structure: Structure) -> dict[str, Any]:
    n = len(structure)
    radii = np.array([_element_value(site.specie, "atomic_radius") for site in structure])
    packing = float(4 / 3 * math.pi * np.sum(radii**3) / structure.volume)
    return {
        "n_sites": n,
        "density": float(structure.density),
        "volume_per_atom": float(structure.volume / n),
        "packing_fraction": packing if math.isfinite(packing) else math.nan,
    }


def _symmetry_features(analyzer: Any, structure: Structure) -> dict[str, Any]:
    symbol = analyzer.get_space_group_symbol()
    anonymized = structure.composition.anonymized_formula
    return {
        "spacegroup_number": int(analyzer.get_space_group_number()),
        "spacegroup_symbol": symbol,
        "crystal_system": analyzer.get_crystal_system(),
        "anonymized_formula": anonymized,
        "prototype": f"{anonymized}_{symbol}",
    }


def _octahedral_order(center: Any, neighbours: Sequence[Any]) -> float:
    """pymatgen's octahedral order parameter of a site and its neighbours (1: perfect)."""
    from pymatgen.analysis.local_env import LocalStructOrderParams
    from pymatgen.core import Lattice
    from pymatgen.core import Structure as PmgStructure

    # the cluster alone in a large box: the order parameters take site indices, and the
    # neighbours are often periodic images of the same site
    box = 30.0
    shift = np.full(3, box / 2) - center.coords
    cluster = PmgStructure(
        Lattice.cubic(box),
        [center.specie] + [n.specie for n in neighbours],
        [center.coords + shift] + [n.coords + shift for n in neighbours],
        coords_are_cartesian=True,
    )
    (value,) = LocalStructOrderParams(["oct"]).get_order_parameters(
        cluster, 0, indices_neighs=list(range(1, len(neighbours) + 1))
    )
    return float(value) if value is not None else math.nan


def _local_features(analyzer: Any, structure: Structure) -> dict[str, Any]:
    """Coordination, bonds and octahedra from CrystalNN, one site per Wyckoff orbit."""
    from pymatgen.analysis.local_env import CrystalNN

    symmetrized = analyzer.get_symmetrized_structure()
    crystal_nn = CrystalNN()
    multiplicities, coordination, octahedral = [], [], []
    bonds, ratios, differences = [], [], []  # per bond: weight, length, ratio, |dX|
    site_max_ratio = []
    octahedra: list[tuple[int, np.ndarray, list[Any]]] = []
    for orbit in symmetrized.equivalent_indices:
        index = orbit[0]
        site = structure[index]
        neighbours = crystal_nn.get_nn_info(structure, index)
        multiplicities.append(len(orbit))
        coordination.append(len(neighbours))
        r_site = _element_value(site.specie, "atomic_radius")
        x_site = _element_value(site.specie, "X")
        site_ratios = []
        for neighbour in neighbours:
            other = neighbour["site"]
            length = float(np.linalg.norm(other.coords - site.coords))
            ratio = length / (r_site + _element_value(other.specie, "atomic_radius"))
            bonds.append((len(orbit) / len(neighbours), length))
            ratios.append(ratio)
            site_ratios.append(ratio)
            differences.append(abs(x_site - _element_value(other.specie, "X")))
        site_max_ratio.append(max(site_ratios) if site_ratios else math.nan)
        # a cation-centred octahedron: six more electronegative neighbours (an anion
        # octahedrally coordinated by cations, as in rock salt, is not one)
        is_octahedral = (
            len(neighbours) == 6
            and all(_element_value(n["site"].specie, "X") > x_site for n in neighbours)
            and _octahedral_order(site, [n["site"] for n in neighbours]) >= OCTAHEDRAL_ORDER_MIN
        )
        octahedral.append(is_octahedral)
        if is_octahedral:
            octahedra.append((len(orbit), site.coords, [n["site"] for n in neighbours]))
    weights = np.asarray(multiplicities, dtype=float) / sum(multiplicities)
    bond_weights = np.array([w for w, _ in bonds])
    lengths = np.array([length for _, length in bonds])
    ratios_array, differences_array = np.array(ratios), np.array(differences)

    def weighted(values: np.ndarray) -> float:
        if len(values) == 0 or not np.isfinite(values).all():
            return math.nan
        return float(bond_weights @ values / bond_weights.sum())

    corner = _corner_sharing_fraction(structure, symmetrized, octahedral, octahedra)
    return {
        "mean_coordination": float(weights @ np.asarray(coordination, dtype=float)),
        "min_coordination": float(min(coordination)),
        "max_coordination": float(max(coordination)),
        "mean_bond_length": weighted(lengths),
        "min_bond_length": float(lengths.min()) if len(lengths) else math.nan,
        "mean_bond_length_ratio": weighted(ratios_array),
        "max_bond_length_ratio": float(np.max(site_max_ratio)) if site_max_ratio else math.nan,
        "mean_bond_electronegativity_difference": weighted(differences_array),
        "max_bond_electronegativity_difference": (
            float(differences_array.max())
            if len(differences_array) and np.isfinite(differences_array).all()
            else math.nan
        ),
        "octahedral_site_fraction": float(weights @ np.asarray(octahedral, dtype=float)),
        "corner_sharing_octahedra_fraction": corner,
        "perovskite_derived": float(corner >= PEROVSKITE_CORNER_FRACTION),
    }


def _corner_sharing_fraction(
    structure: Structure,
    symmetrized: Any,
    octahedral: Sequence[bool],
    octahedra: Sequence[tuple[int, np.ndarray, list[Any]]],
) -> float:
    """Fraction of the ligands of the octahedra that exactly two octahedra share (0: none)."""
    if not octahedra:
        return 0.0
    centres = {
        index
        for orbit, is_octahedral in zip(symmetrized.equivalent_indices, octahedral, strict=True)
        if is_octahedral
        for index in orbit
    }
    shared = total = 0.0
    for multiplicity, centre, ligands in octahedra:
        for ligand in ligands:
            radius = _SHARED_LIGAND_TOLERANCE * float(np.linalg.norm(ligand.coords - centre))
            n_centres = sum(
                1
                for other in structure.get_sites_in_sphere(ligand.coords, radius)
                if other.index in centres and other.nn_distance > 1e-3
            )
            total += multiplicity
            shared += multiplicity * (n_centres == 2)
    return shared / total if total else 0.0


@dataclasses.dataclass
class StructureFeaturizer:
    """Features of crystals, each computed once (in-memory cache keyed by the structure).

    Parameters
    ----------
    symprec : float
        Symmetry tolerance of the space group and the Wyckoff orbits (Å).
    cache : dict
        Structure digest -> features; shared by every call of this featurizer.

    Notes
    -----
    The features of one crystal come in groups (composition, structure, symmetry, local
    environments); a group that fails on a crystal (e.g. CrystalNN on an unusual cell)
    gives NaN (None for text) in its columns and a warning, not an exception.
    """

    symprec: float = 0.01
    cache: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict, repr=False)

    def __call__(self, structure: Structure, name: str = "") -> dict[str, Any]:
        """Features of one crystal (:data:`FEATURE_NAMES`); ``name`` only labels warnings."""
        digest = hashlib.sha256(structure.to_json().encode()).hexdigest()
        if digest not in self.cache:
            self.cache[digest] = self._compute(structure, name or structure.formula)
        return dict(self.cache[digest])

    def _compute(self, structure: Structure, name: str) -> dict[str, Any]:
        import warnings

        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        features: dict[str, Any] = {}
        analyzer = None
        groups = (
            (_COMPOSITION_FEATURES, lambda: _composition_features(structure)),
            (_STRUCTURE_FEATURES, lambda: _structure_features(structure)),
            (_SYMMETRY_FEATURES, lambda: _symmetry_features(analyzer, structure)),
            (_LOCAL_FEATURES, lambda: _local_features(analyzer, structure)),
        )
        try:
            analyzer = SpacegroupAnalyzer(structure, symprec=self.symprec)
        except Exception as error:
            logger.warning("%s: no symmetry analysis (%s)", name, _one_line(error))
        for names, compute in groups:
            try:
                with warnings.catch_warnings():
                    # CrystalNN's notes that it works without oxidation states or falls
                    # back on covalent radii: expected here, nothing wrong with the crystal
                    warnings.filterwarnings("ignore", category=UserWarning, module=_LOCAL_ENV)
                    values = compute()
            except Exception as error:
                logger.warning(
                    "%s: features %s... not computed (%s)", name, names[0], _one_line(error)
                )
                values = {}
            for feature in names:
                default = None if feature in CATEGORICAL_FEATURES else math.nan
                features[feature] = values.get(feature, default)
        return features


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def structure_features(
    structures: Mapping[str, Structure | None], featurizer: StructureFeaturizer | None = None
) -> pd.DataFrame:
    """Features of each crystal, one row per id (:data:`FEATURE_NAMES`).

    Parameters
    ----------
    structures : mapping
        id -> Structure (None: a row of NaN).
    featurizer : StructureFeaturizer, optional
        Reuse one (and its cache) across calls; a new one by default.

    Returns
    -------
    pandas.DataFrame
        Index ``id``; numbers as floats (NaN where a feature group failed), the space group
        symbol, crystal system, anonymized formula and prototype as text.
    """
    import pandas as pd

    featurizer = featurizer or StructureFeaturizer()
    rows = [
        featurizer(structure, name=str(key)) if structure is not None else {}
        for key, structure in structures.items()
    ]
    columns = {
        name: (
            [row.get(name) for row in rows]
            if name in CATEGORICAL_FEATURES
            else np.array([row.get(name, math.nan) for row in rows], dtype=float)
        )
        for name in FEATURE_NAMES
    }
    return pd.DataFrame(columns, index=pd.Index(list(structures), name="id"))


# -- trends ---------------------------------------------------------------------------------------


def _rows_with(table: pd.DataFrame, target: str, statuses: Sequence[str] | None) -> pd.DataFrame:
    """Rows with a finite ``target`` (and, if given, one of ``statuses``)."""
    import pandas as pd

    if target not in table:
        raise ValueError(f"no column {target!r} in the table")
    values = pd.to_numeric(table[target], errors="coerce")
    mask = np.isfinite(values.to_numpy(dtype=float))
    if statuses is not None and "status" in table:
        mask &= table["status"].isin(list(statuses)).to_numpy()
    return table[mask].assign(**{target: values[mask]})


def _aggregate(rows: pd.DataFrame, by: list[str], target: str) -> pd.DataFrame:
    import pandas as pd

    if rows.empty:
        return pd.DataFrame(columns=[*by, "count", "mean", "median", "std", "min", "max"])
    grouped = rows.groupby(by, dropna=False)[target]
    frame = grouped.agg(["count", "mean", "median", "std", "min", "max"]).reset_index()
    frame["count"] = frame["count"].astype(int)
    return frame.sort_values(["temperature", "mean"], ascending=[True, False]).reset_index(
        drop=True
    )


def trends(
    table: pd.DataFrame, target: str = "sigma_a", statuses: Sequence[str] | None = MODEL_STATUSES
) -> dict[str, pd.DataFrame]:
    """Mean, median, spread and count of ``target`` by element, prototype and space group.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`campaign_table` joined with :func:`structure_features` (``formula``,
        ``temperature``, ``prototype``, ``spacegroup_number``, ``spacegroup_symbol``).
    target : str
        The measure, e.g. ``sigma_a`` or ``mean_relative_shift``.
    statuses : sequence of str or None
        Rows of these statuses only (default: completed); None: every finite value.

    Returns
    -------
    dict of pandas.DataFrame
        ``by_element``: per temperature and element, the statistics over the compounds
        that contain it (each compound once per element, whatever its amount);
        ``by_prototype`` (anonymized formula + space group) and ``by_spacegroup``: per
        temperature and group. Columns ``count``, ``mean``, ``median``, ``std`` (NaN for
        one compound), ``min``, ``max``; highest mean first within each temperature.
    """
    from pymatgen.core import Composition

    rows = _rows_with(table, target, statuses)
    symbols: dict[str, list[str]] = {}
    for formula in rows["formula"].dropna().unique():
        try:
            symbols[formula] = sorted(str(e) for e in Composition(formula).elements)
        except Exception:  # not a formula: no element trend for it
            symbols[formula] = []
    by_element = rows.assign(element=rows["formula"].map(symbols)).explode("element")
    by_element = by_element[by_element["element"].notna()]
    result = {"by_element": _aggregate(by_element, ["temperature", "element"], target)}
    for name, by in (
        ("by_prototype", ["prototype"]),
        ("by_spacegroup", ["spacegroup_number", "spacegroup_symbol"]),
    ):
        known = all(c in rows for c in by)
        complete = rows[rows[by].notna().all(axis=1)] if known else rows.iloc[:0]
        result[name] = _aggregate(complete, ["temperature", *by], target)
    return result


# -- the model ------------------------------------------------------------------------------------


class InsufficientDataError(ValueError):
    """Too few compounds with a value of the target for the cross-validation."""


def model_features(table: pd.DataFrame) -> list[str]:
    """Numeric feature columns of ``table`` (:data:`FEATURE_NAMES`, text left out), plus
    ``temperature`` when the table holds more than one temperature."""
    names = [n for n in FEATURE_NAMES if n in table and n not in CATEGORICAL_FEATURES]
    if "temperature" in table and table["temperature"].nunique(dropna=True) > 1:
        names.append("temperature")
    return names


def _pipeline(estimator: str, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    if estimator == "random_forest":
        model = RandomForestRegressor(n_estimators=200, random_state=seed, n_jobs=1)
    else:
        model = GradientBoostingRegressor(
            n_estimators=300, learning_rate=0.05, max_depth=3, subsample=0.8, random_state=seed
        )
    imputer = SimpleImputer(strategy="median", keep_empty_features=True)
    return Pipeline([("impute", imputer), ("model", model)])


@dataclasses.dataclass
class DriverModel:
    """Cross-validated model of one measure from the features (:func:`driver_model`).

    Attributes
    ----------
    target : str
        The measure predicted.
    estimator : str
        ``random_forest`` or ``gradient_boosting`` (scikit-learn, median imputation first).
    n_samples, n_compounds, n_splits : int
        Rows (compound and temperature) learnt from, compounds, cross-validation folds.
    features : list of str
        Features used (those that vary among the rows).
    r2_cv, mae_cv : float
        R² and mean absolute error of the out-of-fold predictions, all folds pooled.
    baseline_r2, baseline_mae : float
        The same for the mean of the training folds (scikit-learn's ``DummyRegressor``):
        a model is informative only where ``r2_cv > baseline_r2`` (about 0 or below).
    r2_folds : list of float
        R² of each fold with at least two rows.
    predictions : pandas.DataFrame
        ``id``, ``formula``, ``temperature``, ``computed``, ``predicted``, ``baseline``,
        ``fold`` per row.
    importances : pandas.DataFrame
        ``name``, ``importance`` (mean increase of the held-out MAE when the feature is
        permuted, in units of the target, averaged over folds weighted by their size),
        ``std`` (over folds), ``shap`` (mean |SHAP value| of a model fitted on all rows,
        where ``shap`` is installed, else NaN); most important first.
    """

    target: str
    estimator: str
    n_samples: int
    n_compounds: int
    n_splits: int
    features: list[str]
    r2_cv: float
    mae_cv: float
    baseline_r2: float
    baseline_mae: float
    r2_folds: list[float]
    predictions: pd.DataFrame = dataclasses.field(repr=False)
    importances: pd.DataFrame = dataclasses.field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Scores and settings (JSON), without the per-row predictions."""
        return {
            "target": self.target,
            "estimator": self.estimator,
            "r2_cv": self.r2_cv,
            "mae_cv": self.mae_cv,
            "baseline_r2": self.baseline_r2,
            "baseline_mae": self.baseline_mae,
            "r2_folds": self.r2_folds,
            "n_samples": self.n_samples,
            "n_compounds": self.n_compounds,
            "n_splits": self.n_splits,
            "cross_validation": "grouped K-fold (all temperatures of a compound in one fold), "
            "shuffled; scores of the pooled out-of-fold predictions",
            "importance": "permutation importance on the held-out folds: increase of the MAE "
            "(target units) when the feature is shuffled",
        }

    def ranked_features(self) -> list[dict[str, Any]]:
        """The features, most important first: ``name``, ``importance``, ``std``, ``shap``."""
        return _records(self.importances)


def driver_model(
    table: pd.DataFrame,
    target: str = "sigma_a",
    features: Sequence[str] | None = None,
    *,
    estimator: str = "random_forest",
    n_splits: int = 5,
    seed: int = 0,
    n_repeats: int = 5,
    statuses: Sequence[str] | None = MODEL_STATUSES,
) -> DriverModel:
    """Predict a measure from the features; cross-validated scores and feature importance.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per compound and temperature with ``target`` and the features (e.g.
        :func:`campaign_table` joined with :func:`structure_features`); ``id`` (else the
        index) tells the compounds apart.
    target : str
        Column to predict (rows where it is not finite are left out).
    features : sequence of str, optional
        Feature columns (default :func:`model_features`); those constant or empty among
        the rows are dropped.
    estimator : {"random_forest", "gradient_boosting"}
        scikit-learn regressor behind a median imputer.
    n_splits : int
        Folds of the grouped K-fold cross-validation (>= 2): every temperature of a compound
        is in the same fold, so a compound is never predicted from itself.
    seed : int
        Seeds the folds, the estimator and the permutations: the result is reproducible.
    n_repeats : int
        Permutations per feature and fold.
    statuses : sequence of str or None
        Learn from rows of these statuses (default: completed); None: all finite rows.

    Returns
    -------
    DriverModel

    Raises
    ------
    InsufficientDataError
        Fewer compounds with a finite target than folds.
    ValueError
        Unknown target, estimator or feature; fewer than 2 folds; no feature varies.
    """
    import pandas as pd
    from sklearn.dummy import DummyRegressor
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.model_selection import GroupKFold

    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, not {estimator!r}")
    if n_splits < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_splits}")
    rows = _rows_with(table, target, statuses)
    groups = (rows["id"] if "id" in rows else pd.Series(rows.index, index=rows.index)).astype(str)
    n_compounds = int(groups.nunique())
    if n_compounds < n_splits:
        which = f" ({', '.join(statuses)})" if statuses is not None else ""
        raise InsufficientDataError(
            f"{target}: {n_compounds} compound(s) with a value{which}, fewer than the "
            f"{n_splits} cross-validation folds"
        )
    names = list(features) if features is not None else model_features(rows)
    unknown = [n for n in names if n not in rows]
    if unknown:
        raise ValueError(f"unknown feature column(s): {', '.join(unknown)}")
    X = rows[names].apply(pd.to_numeric, errors="coerce").astype(float)
    informative = [n for n in names if X[n].nunique(dropna=True) > 1]
    if not informative:
        raise ValueError(f"{target}: no feature varies among the {n_compounds} compounds")
    X = X[informative].reset_index(drop=True)
    y = rows[target].to_numpy(dtype=float)
    predicted, baseline = np.empty(len(y)), np.empty(len(y))
    fold_of = np.empty(len(y), dtype=int)
    scores = np.zeros((n_splits, len(informative)))
    sizes = np.zeros(n_splits)
    r2_folds = []
    folds = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    rng = np.random.default_rng(seed)
    for fold, (train, test) in enumerate(folds.split(X, y, groups.to_numpy())):
        model = _pipeline(estimator, seed).fit(X.iloc[train], y[train])
        predicted[test] = model.predict(X.iloc[test])
        baseline[test] = DummyRegressor().fit(X.iloc[train], y[train]).predict(X.iloc[test])
        fold_of[test] = fold
        scores[fold] = _permutation_importance(model, X.iloc[test], y[test], n_repeats, rng)
        sizes[fold] = len(test)
        if len(test) >= 2:
            r2_folds.append(float(r2_score(y[test], predicted[test])))
    mean = sizes @ scores / sizes.sum()
    importances = pd.DataFrame(
        {
            "name": informative,
            "importance": mean,
            "std": scores.std(axis=0),
            "shap": _mean_abs_shap(estimator, seed, X, y),
        }
    )
    importances = importances.sort_values("importance", ascending=False, kind="stable")
    return DriverModel(
        target=target,
        estimator=estimator,
        n_samples=len(y),
        n_compounds=n_compounds,
        n_splits=n_splits,
        features=informative,
        r2_cv=float(r2_score(y, predicted)),
        mae_cv=float(mean_absolute_error(y, predicted)),
        baseline_r2=float(r2_score(y, baseline)),
        baseline_mae=float(mean_absolute_error(y, baseline)),
        r2_folds=r2_folds,
        predictions=pd.DataFrame(
            {
                "id": groups.to_numpy(),
                "formula": rows["formula"].to_numpy() if "formula" in rows else None,
                "temperature": (
                    rows["temperature"].to_numpy(dtype=float) if "temperature" in rows else np.nan
                ),
                "computed": y,
                "predicted": predicted,
                "baseline": baseline,
                "fold": fold_of,
            }
        ),
        importances=importances.reset_index(drop=True),
    )


def _permutation_importance(
    model: Any, X: pd.DataFrame, y: np.ndarray, n_repeats: int, rng: np.random.Generator
) -> np.ndarray:
    """Increase of the MAE on (X, y) when each column is shuffled, averaged over repeats.

    The definition of :func:`sklearn.inspection.permutation_importance` with the MAE as
    score, evaluated in few large predictions (thousands of small predictions of a forest
    cost seconds in scikit-learn's per-call overhead): the shuffled copies of as many
    columns as fit in :data:`_PERMUTATION_BATCH` values at a time.
    """
    import pandas as pd

    n, n_features = X.shape
    values = X.to_numpy(dtype=float)
    reference = np.abs(model.predict(X) - y).mean()
    per_column = n_repeats * n * n_features
    step = max(1, _PERMUTATION_BATCH // per_column)
    increase = np.empty(n_features)
    for start in range(0, n_features, step):
        columns = range(start, min(n_features, start + step))
        copies = np.broadcast_to(values, (len(columns), n_repeats, n, n_features)).copy()
        for k, j in enumerate(columns):
            for r in range(n_repeats):
                copies[k, r, :, j] = values[rng.permutation(n), j]
        flat = pd.DataFrame(copies.reshape(-1, n_features), columns=X.columns)
        predicted = model.predict(flat).reshape(len(columns), n_repeats, n)
        increase[start : start + len(columns)] = np.abs(predicted - y).mean(axis=2).mean(axis=1)
    return increase - reference


def _mean_abs_shap(estimator: str, seed: int, X: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """Mean |SHAP value| per feature of a model fitted on all rows; NaN without ``shap``."""
    import importlib.util

    if importlib.util.find_spec("shap") is None:
        return np.full(X.shape[1], np.nan)
    try:
        import shap

        model = _pipeline(estimator, seed).fit(X, y)
        imputed = model.named_steps["impute"].transform(X)
        values = shap.TreeExplainer(model.named_steps["model"]).shap_values(imputed)
        return np.abs(np.asarray(values)).mean(axis=0)
    except Exception as error:  # an incompatible shap version: permutation importance only
        logger.warning("SHAP values not computed: %s", _one_line(error))
        return np.full(X.shape[1], np.nan)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts: numpy scalars as Python numbers, NaN as None."""
    records = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            clean[str(key)] = value
        records.append(clean)
    return records


# -- everything for a store -----------------------------------------------------------------------

#: Columns of each compound entry of :meth:`CampaignAnalysis.summary` (the CSV has them all).
SUMMARY_COLUMNS = (
    "id",
    "material",
    "formula",
    "temperature",
    "status",
    "reason",
    "sigma_a",
    "sigma_a_error",
    "mean_relative_shift",
    "mean_absolute_relative_shift",
    "max_relative_shift",
    "anharmonic_free_energy",
    "converged",
    "prototype",
    "spacegroup_number",
    "spacegroup_symbol",
    "perovskite_derived",
)


@dataclasses.dataclass
class CampaignAnalysis:
    """A campaign's table with features, its trends and its models (:func:`analyze`).

    Attributes
    ----------
    table : pandas.DataFrame
        :func:`campaign_table` joined with :func:`structure_features` (one row per compound
        and temperature).
    targets : list of str
        Measures analysed.
    trends : dict
        Target -> :func:`trends`.
    models : dict
        Target -> :class:`DriverModel`, for the targets with enough compounds.
    notes : dict
        Target -> why it has no model (e.g. :class:`InsufficientDataError`).
    """

    table: pd.DataFrame
    targets: list[str]
    trends: dict[str, dict[str, pd.DataFrame]]
    models: dict[str, DriverModel]
    notes: dict[str, str]

    def summary(self) -> dict[str, Any]:
        """JSON summary: the table (``compounds``), trends, ``model`` and ``features``.

        ``compounds``: one entry per compound and temperature (:data:`SUMMARY_COLUMNS`);
        ``model``: the scores of the first target's model (``target``, ``r2_cv``,
        ``baseline_r2``...; the scores None and a ``note`` where it could not be fitted);
        ``features``: its features ranked by permutation importance (``name``,
        ``importance``, ``std``, ``shap``); ``models``: every target's model with its
        ranked ``features``; ``trends``: target -> by_element / by_prototype /
        by_spacegroup.
        """
        table = self.table
        per_compound = table.drop_duplicates("id")
        models = []
        for target in self.targets:
            if target in self.models:
                model = self.models[target]
                models.append({**model.summary(), "features": model.ranked_features()})
            else:
                models.append(
                    {
                        "target": target,
                        "r2_cv": None,
                        "baseline_r2": None,
                        "note": self.notes.get(target, "not fitted"),
                        "features": [],
                    }
                )
        first = dict(models[0]) if models else {"target": None, "r2_cv": None, "baseline_r2": None}
        return {
            "n_compounds": int(per_compound["id"].nunique()),
            "n_rows": len(table),
            "temperatures": sorted(float(t) for t in table["temperature"].dropna().unique()),
            "status_counts": {
                str(k): int(v)
                for k, v in per_compound["status"].value_counts().sort_index().items()
            },
            "compounds": _records(table[[c for c in SUMMARY_COLUMNS if c in table]]),
            "model": {k: v for k, v in first.items() if k != "features"},
            "features": first.get("features", []),
            "models": models,
            "trends": {
                target: {name: _records(frame) for name, frame in groups.items()}
                for target, groups in self.trends.items()
            },
        }


def _checked_targets(targets: Iterable[str]) -> list[str]:
    targets = list(targets)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(
            f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}"
        )
    return targets


def analyze(
    store: JobStore | None = None,
    *,
    files: Sequence[str | Path] = (),
    temperature: float | None = None,
    targets: Iterable[str] = TARGETS,
    estimator: str = "random_forest",
    n_splits: int = 5,
    seed: int = 0,
    launchpad: Any = None,
    featurizer: StructureFeaturizer | None = None,
) -> CampaignAnalysis:
    """Table, features, trends and driver models of the campaign in ``store``.

    Parameters
    ----------
    store : JobStore, optional
        Embedded or MongoDB.
    files : sequence of path
        Files of :func:`export_campaign`, read with or instead of ``store``
        (:func:`read_campaign` merges them).
    temperature : float, optional
        Only this temperature (K); default every temperature (a feature of the models then).
    targets : iterable of str
        Measures to analyse (:data:`TARGETS`).
    estimator, n_splits, seed
        Of :func:`driver_model`.
    launchpad : LaunchPad, optional
        FireWorks states (waiting, fizzled) in the table.
    featurizer : StructureFeaturizer, optional
        Reuse its cache.

    Raises
    ------
    ValueError
        The store and files hold no tdphonon results, or none at ``temperature``; an
        unreadable file; an unknown target.
    """
    targets = _checked_targets(targets)  # before any store is read
    if store is None and not files:
        raise ValueError("nothing to analyse: give a store or exported files")
    table, structures = read_campaign(files) if files else (None, {})
    if store is not None:
        stored = campaign_table(store, launchpad)
        table = stored if table is None else _best_rows([table, stored])
        structures |= campaign_structures(store)
    where = "store" if not files else "inputs"
    if table.empty:
        raise ValueError(f"no tdphonon results in the {where}")
    return analyze_table(
        table,
        structures,
        temperature=temperature,
        targets=targets,
        estimator=estimator,
        n_splits=n_splits,
        seed=seed,
        featurizer=featurizer,
        where=where,
    )


def analyze_table(
    table: pd.DataFrame,
    structures: Mapping[str, Structure],
    *,
    temperature: float | None = None,
    targets: Iterable[str] = TARGETS,
    estimator: str = "random_forest",
    n_splits: int = 5,
    seed: int = 0,
    featurizer: StructureFeaturizer | None = None,
    where: str = "table",
) -> CampaignAnalysis:
    """:func:`analyze` of a table already read (:func:`campaign_table`,
    :func:`read_campaign`, or a selection of their rows) and the crystals by ``id``.

    ``where`` names the source in error messages.
    """
    targets = _checked_targets(targets)
    if temperature is not None:
        selected = np.isclose(table["temperature"].to_numpy(dtype=float), temperature)
        if not selected.any():
            have = ", ".join(f"{t:g}" for t in sorted(table["temperature"].dropna().unique()))
            raise ValueError(
                f"no results at {temperature:g} K in the {where} (temperatures: {have})"
            )
        table = table[selected].reset_index(drop=True)
    ids = list(dict.fromkeys(table["id"]))
    features = structure_features({i: structures.get(i) for i in ids}, featurizer)
    table = table.merge(features, left_on="id", right_index=True, how="left")
    models, notes = {}, {}
    for target in targets:
        try:
            models[target] = driver_model(
                table, target, estimator=estimator, n_splits=n_splits, seed=seed
            )
        except ValueError as error:  # too few compounds (InsufficientDataError), no feature
            notes[target] = str(error)
    return CampaignAnalysis(
        table=table,
        targets=targets,
        trends={target: trends(table, target) for target in targets},
        models=models,
        notes=notes,
    )
