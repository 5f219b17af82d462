"""Your own token weighting: ``--token_weight my_module:my_function``.

The function is imported by name (as ``--scorer module:function``: :mod:`sftgo.user_functions`; ``my_module`` must be
importable in every process, e.g. on ``PYTHONPATH``) and called inside the per-token head, once per chunk of rows
(``--head_chunk_size``, 512 by default), never on an ``[N, V]`` tensor::

    def my_weight(logp, *, ref_logp=None, entropy=None, topk_logits=None):   # torch tensors, one chunk of c tokens
        return logp.exp() * (1 - logp.exp())                                # -> [c], finite, >= 0

    my_weight.needs = ("entropy",)   # what else it reads: any of "ref_logp", "entropy", "topk_logits" (default: none)
    my_weight.top_k = 20             # k of "topk_logits" (needed with it)

Its inputs are detached fp32 (or wider) tensors: ``logp`` ``[c]`` the log p of each token's target under the trained
model; and, only where ``needs`` names them (passed as keywords): ``ref_logp`` ``[c]`` its log p under the reference
model (``--ref_model_name_or_path``; computed once before training and cached, as for rho1), ``entropy`` ``[c]`` the
full-vocabulary entropy of the token's next-token distribution, ``topk_logits`` ``[c, k]`` the ``k`` largest logits of
its row, largest first. It returns the token weights ``t_n`` ``[c]``, each finite and ``>= 0`` (checked every call: a
wrong shape, a NaN / inf or a negative weight stops the run with one line naming the function). No gradient flows
through ``t_n`` (``c_n = w_n t_n f_g`` as for every weighting: README, "Token weights compose"). ``entropy`` is the
head's own, the one its ``entropy`` metric logs (on the fused head read off its gradient GEMM, so no pass over the
logits tile beyond plain SFT's); ``topk_logits`` costs one top-k over each chunk's tile; without ``needs`` the function
costs what DFT costs.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from ...errors import ConfigError
from ...user_functions import import_function
from .none import NoWeighting

if TYPE_CHECKING:
    import torch

INPUTS = ("ref_logp", "entropy", "topk_logits")  # what a function may declare in ``needs`` (keywords it gets)
_ROW_INPUTS = ("entropy", "topk_logits")  # read off each chunk's logits (the head's of_row)


def declared_inputs(name: str, fn) -> tuple[tuple[str, ...], int | None]:
    """``(needs, top_k)`` that ``fn`` declares (its ``needs`` / ``top_k`` attributes), checked: a ConfigError naming
    the function and the fix for a name outside :data:`INPUTS`, a missing or bad ``top_k``, or a signature that cannot
    take ``fn(logp, **needs)``."""
    needs = getattr(fn, "needs", ())
    if isinstance(needs, str):
        needs = (needs,)
    try:
        needs = tuple(needs)
    except TypeError:
        needs = (needs,)
    bad = [n for n in needs if n not in INPUTS]
    if bad:
        raise ConfigError(f"token_weight {name!r}: {fn.__name__}.needs names {bad[0]!r}; declare a tuple of "
                          f"{', '.join(INPUTS)} (e.g. {fn.__name__}.needs = ('entropy',)) or none")
    top_k = getattr(fn, "top_k", None)
    if "topk_logits" in needs:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"token_weight {name!r}: {fn.__name__}.needs has 'topk_logits', so set "
                              f"{fn.__name__}.top_k to the number of logits it reads (an integer >= 1); got {top_k!r}")
    try:
        inspect.signature(fn).bind(None, **{n: None for n in needs})
    except TypeError as e:
        raise ConfigError(f"token_weight {name!r}: {fn.__name__} cannot be called as {fn.__name__}(logp"
                          + "".join(f", {n}=..." for n in needs) + f") ({e}); declare what it reads in "
                          f"{fn.__name__}.needs (any of {', '.join(INPUTS)}) and take them as keywords") from None
    except ValueError:  # a builtin without a signature: called as it is
        pass
    return tuple(dict.fromkeys(needs)), (int(top_k) if "topk_logits" in needs else None)


def load(name: str):
    """``(fn, needs, top_k)`` of ``--token_weight name``, imported and checked (ConfigError otherwise)."""
    fn = import_function(name, "token_weight", ConfigError)
    needs, top_k = declared_inputs(name, fn)
    return fn, needs, top_k


def _row_inputs(needs: tuple[str, ...], top_k: int | None):
    """The head's ``of_row``: ``z [c, V]`` (one chunk's logits) -> ``[c, F]`` (the entropy, then the top-k logits). The
    entropy column is the head's own entropy of each row (``entropy_col``: the head fills it as it computes its
    ``entropy`` metric; NaN here until it does), not a second pass over the tile."""
    want_h, k = "entropy" in needs, top_k if "topk_logits" in needs else 0

    def of_row(z):
        import torch

        z = z.detach()
        parts = [z.new_full((z.shape[0], 1), float("nan"))] if want_h else []
        if k:
            if k > z.shape[-1]:
                raise ConfigError(f"token_weight: top_k = {k} is more than the vocabulary's {z.shape[-1]} logits; "
                                  "set the function's top_k lower")
            parts.append(z.topk(k, dim=-1).values)
        return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]

    of_row.width = int(want_h) + k
    if want_h:
        of_row.entropy_col = 0
    return of_row


def _checked(name: str, fn, needs: tuple[str, ...], top_k: int | None):
    """The head's ``of_token(lp, row, columns)``: calls ``fn`` with what it declared and checks what it returns."""
    at_h = 0
    at_k = 1 if "entropy" in needs else 0

    def of_token(lp, row, columns):
        import torch

        kw = {}
        for n in needs:
            if n == "ref_logp":
                if "ref_logp" not in columns:
                    raise ConfigError(f"token_weight {name!r} reads ref_logp, which this batch lacks; run it through "
                                      "sftgo train / SFTGoTrainer / SFTGoSFTTrainer with --ref_model_name_or_path")
                kw[n] = columns["ref_logp"].to(lp.dtype)
            elif n == "entropy":
                kw[n] = row[:, at_h]
            else:
                kw[n] = row[:, at_k:]
        t = fn(lp, **kw)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(lp.shape):
            got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"token_weight {name!r} returned {got} for {lp.shape[0]} tokens; it must return one "
                              f"weight per token, a tensor of logp's shape {tuple(lp.shape)}")
        t = t.detach()
        if not bool((torch.isfinite(t) & (t >= 0)).all()):  # NaN fails both
            i = int((~(torch.isfinite(t) & (t >= 0))).nonzero()[0, 0])
            raise ConfigError(f"token_weight {name!r} returned {float(t[i])!r} for a token with log p "
                              f"{float(lp[i]):.4g}; weights must be finite and >= 0 (guard the function, e.g. "
                              "torch.nan_to_num(...).clamp(min=0))")
        return t

    return of_token


class UserWeighting(NoWeighting):
    """``--token_weight module:function`` (module docstring): ``t_n = sg(fn(log p_n, ...))``."""

    def __init__(self, args, name: str | None = None):
        super().__init__(args)
        self.name = name or args.token_weight
        self.fn, self.needs, self.top_k = load(self.name)
        self.columns = ("ref_logp",) if "ref_logp" in self.needs else ()

    @classmethod
    def check(cls, args, name: str) -> None:
        load(name)

    @classmethod
    def columns_of(cls, name: str) -> tuple[str, ...]:
        try:
            _, needs, _ = load(name)
        except ConfigError:  # reported by the config's check of token_weight
            return ()
        return ("ref_logp",) if "ref_logp" in needs else ()

    def fns(self):
        out = {"of_token": _checked(self.name, self.fn, self.needs, self.top_k)}
        if any(n in _ROW_INPUTS for n in self.needs):
            out["of_row"] = _row_inputs(self.needs, self.top_k)
        return out
