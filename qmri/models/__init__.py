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
========================  =======================================  ==========================

Every fit also returns ``R2`` (goodness of fit, 0..1) and ``fitmask`` (uint8, 1 = success).
"""

from qmri.models.base import ModelFit
from qmri.models.diffusion import ADCModel
from qmri.models.inversion_recovery import InversionRecoveryModel
from qmri.models.relaxometry import MonoExponentialModel
from qmri.models.vfa import VFAModel

__all__ = [
    "ADCModel",
    "InversionRecoveryModel",
    "ModelFit",
    "MonoExponentialModel",
    "VFAModel",
]
