"""DCE-MRI: signal to concentration, arterial input functions, bolus arrival, tracer-kinetic
models (Tofts, extended Tofts, Patlak) and semi-quantitative maps.

Time runs along the last axis of every 4-D array, frame times are in seconds, concentrations in
mM, rate constants in 1/min; everything is vectorized over voxels.

======================  ==========================================================================
submodule               contents
======================  ==========================================================================
:mod:`.timing`          :func:`check_frame_times`, :func:`check_baseline_frames`
:mod:`.concentration`   :func:`relaxivity` (Rohrer 2005 table), :func:`signal_to_concentration`
                        (SPGR, B1, baseline frames) -> :class:`ConcentrationResult`
:mod:`.aif`             :class:`ArterialInputFunction`; :func:`parker_aif` (population, fine grid),
                        :func:`parker_blood_concentration`, :func:`fine_time_grid`,
                        :func:`aif_from_blood_curve`, :func:`mean_curve`, :func:`read_aif_tsv`
:mod:`.arrival`         :func:`detect_bolus_arrival` (hinge / Parker fit),
                        :func:`detect_baseline_frames` (pre-contrast frames of a series)
:mod:`.convolution`     :func:`exp_convolution`: exact convolution of a piecewise-linear AIF with
                        an exponential (and the fine-grid and delayed variants)
:mod:`.kinetic`         :class:`ToftsModel`, :class:`ExtendedToftsModel`, :class:`PatlakModel`
                        (:class:`~qmri.models.base.Model` subclasses) -> :class:`DCEFit`;
                        :data:`DCE_MODELS` by config name
:mod:`.semiquant`       :func:`semiquantitative_maps` (iAUC60/90, TTP, Cmax, MaxRSE)
                        -> :class:`SemiQuantitativeFit`
:mod:`.analysis`        :class:`DCEInputs`, :func:`prepare_dce`, :func:`kinetic_model`,
                        :func:`fit_dce`: a whole analysis from arrays (no file I/O)
private modules         ``_forward`` (forward equations with Jacobians), ``_lm`` (start values,
                        Levenberg-Marquardt), ``_linear_start`` (closed-form linear estimates),
                        ``_linear_kernels`` (their compiled numba single pass)
======================  ==========================================================================

Imports run one way (no cycle): ``timing`` is imported by ``aif``, ``concentration``,
``convolution`` and ``semiquant``; ``convolution`` by the private fit modules; those and ``aif``
by ``kinetic``; ``kinetic`` by ``arrival``; everything by ``analysis``.
"""

from qmri.models.dce.aif import (
    PARKER_FINE_DT_S,
    PARKER_PARAMS,
    PARKER_REFERENCE,
    ArterialInputFunction,
    aif_from_blood_curve,
    fine_time_grid,
    mean_curve,
    parker_aif,
    parker_blood_concentration,
    read_aif_tsv,
)
from qmri.models.dce.analysis import DCEInputs, fit_dce, kinetic_model, prepare_dce
from qmri.models.dce.arrival import detect_baseline_frames, detect_bolus_arrival
from qmri.models.dce.concentration import (
    RELAXIVITY_TABLE,
    ConcentrationResult,
    relaxivity,
    signal_to_concentration,
)
from qmri.models.dce.convolution import exp_convolution
from qmri.models.dce.kinetic import (
    DCE_MODELS,
    DEFAULT_BOUNDS,
    DEFAULT_DCE_CHUNK_SIZE,
    DCEFit,
    ExtendedToftsModel,
    PatlakModel,
    ToftsModel,
)
from qmri.models.dce.semiquant import SemiQuantitativeFit, semiquantitative_maps
from qmri.models.dce.timing import check_baseline_frames, check_frame_times

__all__ = [
    "DCE_MODELS",
    "DEFAULT_BOUNDS",
    "DEFAULT_DCE_CHUNK_SIZE",
    "PARKER_FINE_DT_S",
    "PARKER_PARAMS",
    "PARKER_REFERENCE",
    "RELAXIVITY_TABLE",
    "ArterialInputFunction",
    "ConcentrationResult",
    "DCEFit",
    "DCEInputs",
    "ExtendedToftsModel",
    "PatlakModel",
    "SemiQuantitativeFit",
    "ToftsModel",
    "aif_from_blood_curve",
    "check_baseline_frames",
    "check_frame_times",
    "detect_baseline_frames",
    "detect_bolus_arrival",
    "exp_convolution",
    "fine_time_grid",
    "fit_dce",
    "kinetic_model",
    "mean_curve",
    "parker_aif",
    "parker_blood_concentration",
    "prepare_dce",
    "read_aif_tsv",
    "relaxivity",
    "semiquantitative_maps",
    "signal_to_concentration",
]
