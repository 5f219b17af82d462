"""Token weightings ``t_n`` (``--token_weight``), one module each; adding one is a module here and a row below."""

from __future__ import annotations

from .chord import CHORDWeighting
from .dft import DFTWeighting, dft_weights
from .eaft import EAFTWeighting, eaft_weights
from .infosft import InfoSFTWeighting, infosft_weights
from .none import NoWeighting
from .prift import PriFTMassWeighting, PriFTProbWeighting, prift_mass_weights, prift_prob_weights
from .power import PowerWeighting

TOKEN_WEIGHTS = {
    "none": NoWeighting,
    "dft": DFTWeighting,
    "infosft": InfoSFTWeighting,
    "eaft": EAFTWeighting,
    "chord": CHORDWeighting,
    "prift_prob": PriFTProbWeighting,
    "prift_mass": PriFTMassWeighting,
    "power": PowerWeighting,
}

__all__ = ["TOKEN_WEIGHTS", "DFTWeighting", "EAFTWeighting", "InfoSFTWeighting", "NoWeighting", "dft_weights",
           "eaft_weights", "infosft_weights", "prift_mass_weights", "prift_prob_weights", "PowerWeighting"]
