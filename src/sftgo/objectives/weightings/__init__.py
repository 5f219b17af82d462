"""Token weightings ``t_n`` (``--token_weight``), one module each; adding one is a module here and a row below."""

from __future__ import annotations

from .chord import CHORDWeighting
from .dft import DFTWeighting, dft_weights
from .eaft import EAFTWeighting, eaft_weights
from .infosft import InfoSFTWeighting, infosft_weights
from .none import NoWeighting
from .power import PowerWeighting
from .prift import PriFTMassWeighting, PriFTProbWeighting, prift_mass_weights, prift_prob_weights
from .user import UserWeighting

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



def weighting_class(name: str):
    """The class of ``--token_weight name``: a row of :data:`TOKEN_WEIGHTS`, or :class:`UserWeighting` for
    ``module:function`` (your own function: :mod:`.user`); ValueError naming the choices otherwise."""
    cls = TOKEN_WEIGHTS.get(name)
    if cls is not None:
        return cls
    if isinstance(name, str) and ":" in name:
        return UserWeighting
    raise ValueError(f"token_weight: {name!r} is not one of {', '.join(TOKEN_WEIGHTS)}, or module:function for your "
                     "own (README, 'Your own token weighting')")


__all__ = ["TOKEN_WEIGHTS", "DFTWeighting", "EAFTWeighting", "InfoSFTWeighting", "NoWeighting", "PowerWeighting",
           "UserWeighting", "dft_weights", "eaft_weights", "infosft_weights", "prift_mass_weights",
           "prift_prob_weights", "weighting_class"]
