"""Quantitative MRI models: configured once from acquisition parameters, fitted on arrays.

Every model follows the dipy ``reconst`` pattern: ``model = Model(acquisition, *, options)``
validates its inputs, ``model.fit(data, *, mask=None)`` fits all voxels at once (vectorized,
in chunks) and returns a :class:`ModelFit` with float32 maps in the units of the data contract.
The model object is never modified by fitting. The relaxometry and diffusion models derive from
:class:`Model` (:mod:`qmri.models.base`); their fits (:class:`VFAFit`, ...) expose every map as
a property with its unit in the name (``fit.t1_s``, ``fit.adc_mm2_s``), and
``model.predict(fit.params, **voxel_inputs)`` gives the fitted signal back.

========================  =======================================  ==========================
model                     signal                                   maps
========================  =======================================  ==========================
:class:`VFAModel`         SPGR, variable flip angle (DESPOT1), B1  T1 (s), M0 (a.u.)
:class:`MonoExponentialModel`  S0 exp(-TE/T2) [+ noise floor c]   T2 or T2star (s), S0 [, c]
:class:`InversionRecoveryModel`  abs(a + b exp(-TI/T1)), magnitude   T1 (s), M0, InvEff (1)
:class:`ADCModel`         S0 exp(-b ADC), b_min <= b <= b_max      ADC (mm^2/s), S0
:class:`IVIMModel`        S0 [(1-f) exp(-bD) + f exp(-bD*)]        D, Dstar (mm^2/s), f, S0
:class:`DTIModel`         S0 exp(-b g^T D g), >= 6 directions      FA, MD, AD, RD (mm^2/s), S0
:class:`ToftsModel`       Tofts (plasma AIF, exact convolution)    Ktrans, kep (1/min), ve
:class:`ExtendedToftsModel`  Tofts + vp Cp                         Ktrans, kep (1/min), ve, vp
:class:`PatlakModel`      vp Cp + Ktrans int Cp                    Ktrans (1/min), vp
========================  =======================================  ==========================

Every fit also returns ``R2`` (goodness of fit, 0..1) and ``fitmask`` (uint8, 1 = success).
The DCE models and everything around them (concentration, AIFs, bolus arrival,
semi-quantitative maps, :data:`DCE_MODELS` by config name) live in :mod:`qmri.models.dce`.

The fits of the models above, each map a property (unit in its name), ``fit.params`` the
parameter maps that ``predict`` takes:

* :class:`VFAFit`: ``t1_s``, ``m0``;
* :class:`MonoExponentialFit`: ``t2_s`` or ``t2star_s`` (both also ``relaxation_time_s``),
  ``s0``, ``noisefloor`` (a.u., with ``noise_floor=True``);
* :class:`InversionRecoveryFit`: ``t1_s``, ``m0``, ``inv_eff``;
* :class:`ADCFit`: ``adc_mm2_s``, ``s0``;
* :class:`IVIMFit`: ``d_mm2_s``, ``dstar_mm2_s``, ``f``, ``s0``;
* :class:`DTIFit`: ``fa``, ``md_mm2_s``, ``ad_mm2_s``, ``rd_mm2_s``, ``s0`` and the tensor
  ``tensor_mm2_s`` with ``evals_mm2_s`` and ``evecs``;
* :class:`DCEFit` (the kinetic models): ``ktrans_per_min``, ``ve``, ``vp``, ``kep_per_min``,
  ``delay_s`` (those the model fits);
* all of them (:class:`ModelFit`): ``r2``, ``fitmask``.
"""

from qmri.models.base import Model, ModelFit
from qmri.models.dce import DCE_MODELS, DCEFit, ExtendedToftsModel, PatlakModel, ToftsModel
from qmri.models.diffusion import ADCFit, ADCModel
from qmri.models.dti import DTIFit, DTIModel
from qmri.models.inversion_recovery import InversionRecoveryFit, InversionRecoveryModel
from qmri.models.ivim import IVIMFit, IVIMModel
from qmri.models.relaxometry import MonoExponentialFit, MonoExponentialModel
from qmri.models.vfa import VFAFit, VFAModel

__all__ = [
    "DCE_MODELS",
    "ADCFit",
    "ADCModel",
    "DCEFit",
    "DTIFit",
    "DTIModel",
    "ExtendedToftsModel",
    "IVIMFit",
    "IVIMModel",
    "InversionRecoveryFit",
    "InversionRecoveryModel",
    "Model",
    "ModelFit",
    "MonoExponentialFit",
    "MonoExponentialModel",
    "PatlakModel",
    "ToftsModel",
    "VFAFit",
    "VFAModel",
]
