"""Token weightings written as a user would (``--token_weight tests.user_weights:<name>``; README, "Your own token
weighting"): the tests of tests/unit/test_user_token_weight.py and tests/integration/test_invariance.py use them."""

import torch


def dft(logp):
    """DFT's weight ``p``, as the user's own function (must equal ``--token_weight dft``)."""
    return logp.exp()


def mixed(logp, *, ref_logp, entropy, topk_logits):
    """Every input at once: p, the excess loss, the entropy and the top-k margin all move the weight."""
    p = logp.exp()
    margin = torch.softmax(topk_logits, dim=-1)[:, 0]  # the top token's share of the top-k
    return (p + 0.5 * torch.sigmoid(ref_logp - logp)) * torch.exp(-0.2 * entropy) * (0.5 + margin)


mixed.needs = ("ref_logp", "entropy", "topk_logits")
mixed.top_k = 3


def row_only(logp, *, entropy, topk_logits):
    """The logits row's inputs without the reference (no reference pass needed)."""
    return torch.exp(-entropy) + torch.softmax(topk_logits, dim=-1)[:, 0] * logp.exp()


row_only.needs = ("entropy", "topk_logits")
row_only.top_k = 4


# ----- wrong ones (the error tests)

def wrong_shape(logp):
    return logp.exp()[:1]


def a_float(logp):
    return 1.0


def with_nan(logp):
    return torch.where(logp < logp.max(), logp.exp(), torch.full_like(logp, float("nan")))


def with_inf(logp):
    return torch.where(logp < logp.max(), logp.exp(), torch.full_like(logp, float("inf")))


def negative(logp):
    return logp  # log p <= 0


def bad_needs(logp, *, perplexity=None):
    return logp.exp()


bad_needs.needs = ("perplexity",)


def no_top_k(logp, *, topk_logits):
    return logp.exp()


no_top_k.needs = ("topk_logits",)


def undeclared(logp, ref_logp):
    return logp.exp()


not_a_function = 3
