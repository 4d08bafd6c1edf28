"""The fit registry: one entry per fit, read by the study index, the workflow, the CLI and the outputs.

A fit is a model applied to one series kind of a session. Its :class:`FitSpec` says which series
it reads (:class:`qmri.bids.SeriesKind`: file pattern, sidecar parameters, motion reference),
which config section configures it, which maps it writes (and which of them the ROI tables
report, under which name), what else it needs (the session's B1 map, a map of another fit, the
baseline labels) and where its estimator lives (``"module:function"``, imported only by the job
that runs it, so planning the workflow stays light). The workflow makes one rule ``fit_<name>``
per entry; the study index asks which sessions have data for it; the output's ``.bidsignore``
lists its non-BIDS maps.

Adding a fit is a model file, an entry here (or :func:`register` from a plugin module named in
the config key ``plugins``) and a config section in the schema (a plugin's entry carries its
own ``config_schema``).

The built-in entries, in the order of the tables:

=========  =========  ===========  =========================================================
fit        series     section      maps (ROI table names)
=========  =========  ===========  =========================================================
``vfa``    VFA        ``t1_vfa``   T1map (T1), M0map; B1-corrected with the session's TB1map
``irt1``   IRT1       (none)       T1map (T1IR), M0map
``mese``   MESE       ``t2``       T2map (T2), S0map
``megre``  MEGRE      ``t2star``   T2starmap (T2star), S0map
``adc``    dwi        ``adc``      ADC (ADC), S0map
``ivim``   dwi        ``ivim``     D, Dstar, f (D, Dstar, f), S0map; motion from ``adc``
``dce``    dce        ``dce``      Ktrans, kep, ve, vp (by model), iAUC60, iAUC90, TTP, Cmax,
                                   MaxRSE; needs the session's VFA T1 map
=========  =========  ===========  =========================================================

Every fit also writes ``R2`` (goodness of fit) and ``fitmask`` (1 where the fit succeeded).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qmri import bids
from qmri.errors import QMRIInputError
from qmri.paths import map_suffix

if TYPE_CHECKING:
    import numpy as np

    from qmri.models.base import ModelFit

__all__ = [
    "FITS",
    "SERIES_KINDS",
    "FitOutcome",
    "FitRequest",
    "FitSpec",
    "OutputMap",
    "enabled_fits",
    "load_plugins",
    "register",
]


# --------------------------------------------------------------------------------------------
# series kinds (data contract section 1)
# --------------------------------------------------------------------------------------------

#: Every series kind the contract names, by name.
SERIES_KINDS: dict[str, bids.SeriesKind] = {
    kind.name: kind
    for kind in (
        bids.SeriesKind("VFA", "anat", "VFA", "flip", bids.vfa_parameters, "highest_snr"),
        bids.SeriesKind("IRT1", "anat", "IRT1", "inv", bids.inversion_parameters, "highest_snr"),
        bids.SeriesKind("MESE", "anat", "MESE", "echo", bids.multi_echo_parameters, "highest_snr"),
        bids.SeriesKind(
            "MEGRE", "anat", "MEGRE", "echo", bids.multi_echo_parameters, "highest_snr"
        ),
        bids.SeriesKind("dwi", "dwi", "dwi", None, bids.dwi_parameters, "low_b_mean"),
        bids.SeriesKind("dce", "perf", "dce", None, bids.dce_parameters, "baseline_mean"),
    )
}


# --------------------------------------------------------------------------------------------
# fit entries
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputMap:
    """One map a fit writes.

    Attributes
    ----------
    param : str
        Its name in :attr:`qmri.models.ModelFit.maps` (``T1``, ``Ktrans``, ``R2``, ``fitmask``).
    table : str or None
        Its name in the ROI tables (``map`` column), or None when the tables leave it out.
    """

    param: str
    table: str | None = None

    @property
    def suffix(self) -> str:
        """File suffix (BIDS suffix where one exists: ``T1`` -> ``T1map``)."""
        return map_suffix(self.param)


@dataclass(frozen=True)
class FitRequest:
    """What an estimator gets: the loaded series and everything configured for it.

    Attributes
    ----------
    series : qmri.bids.Series
        The raw series with its acquisition parameters.
    data : ndarray
        Its data after motion correction (what is fitted).
    options : mapping
        The fit's config section (every key filled from the schema defaults).
    b1 : ndarray or None
        The session's B1 map as the actual/nominal flip-angle ratio on the series grid, when
        the fit uses it; ``b1_source`` is its file and ``b1_convention`` how the file stores
        it (``percent`` or ``ratio``).
    inputs : mapping of str to Path
        Further files the entry asked for (:attr:`FitSpec.requires`; ``labels`` and
        ``session_xfm`` with :attr:`FitSpec.needs_labels`).
    series_xfm : Path
        The series -> session reference transform of this session.
    """

    series: bids.Series
    data: np.ndarray
    options: Mapping[str, Any]
    b1: np.ndarray | None = None
    b1_source: Path | None = None
    b1_convention: str | None = None
    inputs: Mapping[str, Path] = field(default_factory=dict)
    series_xfm: Path | None = None


@dataclass(frozen=True)
class FitOutcome:
    """What an estimator returns: the fits to write and what their sidecars record."""

    fits: Sequence[ModelFit]
    acquisition: Mapping[str, Any]
    sources: Sequence[Path]


@dataclass(frozen=True)
class FitSpec:
    """One fit of the registry (see the module description).

    Attributes
    ----------
    name : str
        The ``desc-`` label of its maps and the rule ``fit_<name>``.
    series : qmri.bids.SeriesKind
        The series it reads.
    datatype : str
        Output datatype folder (``anat``, ``dwi``, ``perf``).
    section : str or None
        Its config section (options handed to the estimator); None: no options.
    outputs : callable
        ``outputs(options) -> tuple of OutputMap``: every map written, in order (R2 and fitmask
        included); the options decide it where the model does (DCE).
    estimator : str
        ``"module:function"``; the function takes a :class:`FitRequest` and returns a
        :class:`FitOutcome`.
    b1_option : str or None
        ``"section.key"`` of the boolean that switches B1 correction on; None: no B1 map.
    requires : mapping of str to (str, str)
        Input name -> (fit, map param) of maps of other fits of the session it needs (with
        that fit's series transform as ``<input>_xfm``); the fit exists only where they do.
    needs_labels : callable or None
        ``needs_labels(options) -> bool``: whether it reads the baseline labels (and the
        session transform) as inputs ``labels`` and ``session_xfm``.
    resources : mapping
        Portable job resources (``mem_mb``, ``runtime`` in minutes), measured on the sample.
    config_schema : mapping or None
        JSON schema of its config section, for fits registered by plugins (built-in sections
        are in ``config.schema.yaml``).
    """

    name: str
    series: bids.SeriesKind
    datatype: str
    section: str | None
    outputs: Callable[[Mapping[str, Any]], tuple[OutputMap, ...]]
    estimator: str
    b1_option: str | None = None
    requires: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    needs_labels: Callable[[Mapping[str, Any]], bool] | None = None
    resources: Mapping[str, int] = field(default_factory=lambda: {"mem_mb": 500, "runtime": 10})
    config_schema: Mapping[str, Any] | None = None

    def options(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The fit's config section (empty without one)."""
        return dict(config.get(self.section, {})) if self.section else {}

    def activated(self, config: Mapping[str, Any]) -> bool:
        """False when its section has ``activate: false``."""
        return bool(self.options(config).get("activate", True))

    def uses_b1(self, config: Mapping[str, Any]) -> bool:
        """Whether the fit takes the session's B1 map (when it has one)."""
        if self.b1_option is None:
            return False
        section, key = self.b1_option.split(".")
        return bool(config[section][key])

    def reads_labels(self, config: Mapping[str, Any]) -> bool:
        """Whether the fit reads the baseline labels (e.g. a measured AIF)."""
        return self.needs_labels is not None and self.needs_labels(self.options(config))

    def maps(self, config: Mapping[str, Any]) -> tuple[OutputMap, ...]:
        """Every map the fit writes under this config."""
        return self.outputs(self.options(config))

    def table_maps(self, config: Mapping[str, Any]) -> tuple[OutputMap, ...]:
        """The maps the ROI tables report."""
        return tuple(m for m in self.maps(config) if m.table is not None)

    def estimate(self, request: FitRequest) -> FitOutcome:
        """Run the estimator (imported on first use)."""
        module, _, function = self.estimator.partition(":")
        return getattr(importlib.import_module(module), function)(request)


def _fixed(*maps: OutputMap) -> Callable[[Mapping[str, Any]], tuple[OutputMap, ...]]:
    """``outputs`` of a fit whose maps do not depend on its options."""
    out = (*maps, OutputMap("R2"), OutputMap("fitmask"))
    return lambda options: out


#: Kinetic maps of each DCE model (config ``dce.model``), then the semi-quantitative ones.
DCE_MODEL_MAPS: dict[str, tuple[str, ...]] = {
    "tofts": ("Ktrans", "kep", "ve"),
    "etofts": ("Ktrans", "kep", "ve", "vp"),
    "patlak": ("Ktrans", "vp"),
}
_DCE_SEMIQUANTITATIVE = (
    OutputMap("iAUC60", "iAUC60"),
    OutputMap("iAUC90", "iAUC90"),
    OutputMap("TTP"),
    OutputMap("Cmax"),
    OutputMap("MaxRSE"),
)


def _dce_outputs(options: Mapping[str, Any]) -> tuple[OutputMap, ...]:
    kinetic = tuple(OutputMap(p, p) for p in DCE_MODEL_MAPS[options["model"]])
    return (*kinetic, OutputMap("R2"), OutputMap("fitmask"), *_DCE_SEMIQUANTITATIVE)


_RECIPES = "qmri.recipes"

#: The fits, by name, in the order of the tables.
FITS: dict[str, FitSpec] = {}


def register(spec: FitSpec) -> FitSpec:
    """Add a fit to :data:`FITS` (a plugin module calls this when it is imported)."""
    if spec.name in FITS and FITS[spec.name] != spec:
        raise QMRIInputError(f"a fit named '{spec.name}' is registered already")
    FITS[spec.name] = spec
    SERIES_KINDS.setdefault(spec.series.name, spec.series)
    return spec


for _spec in (
    FitSpec(
        "vfa", SERIES_KINDS["VFA"], "anat", "t1_vfa",
        _fixed(OutputMap("T1", "T1"), OutputMap("M0")), f"{_RECIPES}:vfa",
        b1_option="t1_vfa.b1_correction", resources={"mem_mb": 500, "runtime": 10},
    ),
    FitSpec(
        "irt1", SERIES_KINDS["IRT1"], "anat", None,
        _fixed(OutputMap("T1", "T1IR"), OutputMap("M0")), f"{_RECIPES}:inversion_recovery",
        resources={"mem_mb": 500, "runtime": 10},
    ),
    FitSpec(
        "mese", SERIES_KINDS["MESE"], "anat", "t2",
        _fixed(OutputMap("T2", "T2"), OutputMap("S0")), f"{_RECIPES}:multi_echo_t2",
        resources={"mem_mb": 500, "runtime": 10},
    ),
    FitSpec(
        "megre", SERIES_KINDS["MEGRE"], "anat", "t2star",
        _fixed(OutputMap("T2star", "T2star"), OutputMap("S0")), f"{_RECIPES}:multi_echo_t2star",
        resources={"mem_mb": 500, "runtime": 10},
    ),
    FitSpec(
        "adc", SERIES_KINDS["dwi"], "dwi", "adc",
        _fixed(OutputMap("ADC", "ADC"), OutputMap("S0")), f"{_RECIPES}:adc",
        resources={"mem_mb": 500, "runtime": 10},
    ),
    FitSpec(
        "ivim", SERIES_KINDS["dwi"], "dwi", "ivim",
        _fixed(OutputMap("D", "D"), OutputMap("Dstar", "Dstar"), OutputMap("f", "f"),
               OutputMap("S0")),
        f"{_RECIPES}:ivim", resources={"mem_mb": 400, "runtime": 5},
    ),
    FitSpec(
        "dce", SERIES_KINDS["dce"], "perf", "dce", _dce_outputs, f"{_RECIPES}:dce",
        b1_option="t1_vfa.b1_correction", requires={"t1": ("vfa", "T1")},
        needs_labels=lambda options: options["aif"] == "aorta",
        resources={"mem_mb": 2500, "runtime": 15},
    ),
):  # fmt: skip
    register(_spec)


# --------------------------------------------------------------------------------------------
# questions the workflow asks
# --------------------------------------------------------------------------------------------


def enabled_fits(config: Mapping[str, Any]) -> list[FitSpec]:
    """The fits the config switches on, in registry order."""
    return [spec for spec in FITS.values() if spec.activated(config)]


def motion_source(spec: FitSpec, config: Mapping[str, Any]) -> FitSpec:
    """The fit that motion-corrects and registers ``spec``'s series: the first enabled fit of
    that series in registry order (``adc`` for ``ivim``); the others reuse its transforms."""
    return next(s for s in enabled_fits(config) if s.series.name == spec.series.name)


def all_map_suffixes(config: Mapping[str, Any]) -> list[str]:
    """File suffixes of every map every registered fit can write (for ``.bidsignore``)."""
    suffixes: list[str] = []
    for spec in FITS.values():
        for output in spec.maps(config):
            if output.suffix not in suffixes:
                suffixes.append(output.suffix)
    return suffixes


def load_plugins(modules: Sequence[str]) -> None:
    """Import the plugin modules named in the config key ``plugins`` (they call :func:`register`).

    Raises
    ------
    QMRIInputError
        A module that cannot be imported (one line naming it).
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise QMRIInputError(
                f"cannot import plugin module ({exc})", f"plugins: {name}"
            ) from None
