"""Quantitative MRI models: configured once from acquisition parameters, fitted on arrays.

Every model follows the dipy ``reconst`` pattern: ``model = Model(acquisition, *, options)``
validates its inputs, ``model.fit(data, *, mask=None)`` fits all voxels at once (vectorized,
in chunks) and returns a :class:`ModelFit` with float32 maps in the units of the data contract.
The model object is never modified by fitting.

========================  =======================================  ==========================
model                     signal                                   maps
========================  =======================================  ==========================
:class:`VFAModel`         SPGR, variable flip angle (DESPOT1)      T1 (s), M0
:class:`MonoExponentialModel`  S0 exp(-TE/T2) [+ noise floor]     T2 or T2star (s), S0
:class:`InversionRecoveryModel`  abs(a + b exp(-TI/T1)), magnitude   T1 (s), M0, InvEff
:class:`ADCModel`         S0 exp(-b ADC)                           ADC (mm^2/s), S0
:class:`IVIMModel`        S0 [(1-f) exp(-bD) + f exp(-bD*)]        D, Dstar (mm^2/s), f, S0
:class:`DTIModel`         S0 exp(-b g^T D g), >= 6 directions      FA, MD, AD, RD (mm^2/s), S0
:class:`ToftsModel`       Tofts (plasma AIF, exact convolution)    Ktrans, kep (1/min), ve
:class:`ExtendedToftsModel`  Tofts + vp Cp                         Ktrans, kep (1/min), ve, vp
:class:`PatlakModel`      vp Cp + Ktrans int Cp                    Ktrans (1/min), vp
========================  =======================================  ==========================

Every fit also returns ``R2`` (goodness of fit, 0..1) and ``fitmask`` (uint8, 1 = success).
"""

from qmri.models.base import ModelFit
from qmri.models.dce import ExtendedToftsModel, PatlakModel, ToftsModel
from qmri.models.diffusion import ADCModel
from qmri.models.dti import DTIModel
from qmri.models.inversion_recovery import InversionRecoveryModel
from qmri.models.ivim import IVIMModel
from qmri.models.relaxometry import MonoExponentialModel
from qmri.models.vfa import VFAModel

#: Kinetic model classes by their command-line / config name.
DCE_MODELS = {"tofts": ToftsModel, "etofts": ExtendedToftsModel, "patlak": PatlakModel}

__all__ = [
    "DCE_MODELS",
    "ADCModel",
    "DTIModel",
    "ExtendedToftsModel",
    "IVIMModel",
    "InversionRecoveryModel",
    "ModelFit",
    "MonoExponentialModel",
    "PatlakModel",
    "ToftsModel",
    "VFAModel",
]
