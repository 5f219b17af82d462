"""sftgo.objectives.compute_loss_func against slow, obvious references written here from the published formulas:
loss value and gradient w.r.t. the logits, padding and prompt positions, and transformers' num_items_in_batch
normalization (two micro-batches with the step's count sum to the whole batch's loss)."""

import math
from types import SimpleNamespace

import pytest
import torch

from sftgo.config import ConfigError
from sftgo.objectives import compute_loss_func


def _batch(seed=0, B=3, T=7, V=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 3
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :3] = -100  # a prompt
    labels[1, 5:] = -100  # padding
    labels[2, 0] = -100
    return logits, labels


def _shifted(logits, labels):
    """Reference layout: the logits at t predict labels[t + 1]; rows of supervised tokens only."""
    z, y = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    keep = y != -100
    return z[keep], y[keep]


def ref_sft(logits, labels, num_items=None):
    z, y = _shifted(logits, labels)
    lp = torch.log_softmax(z.float(), -1).gather(-1, y[:, None]).squeeze(-1)
    return -lp.sum() / (num_items if num_items is not None else y.numel())


def ref_dft(logits, labels, num_items=None):
    z, y = _shifted(logits, labels)
    lp = torch.log_softmax(z.float(), -1).gather(-1, y[:, None]).squeeze(-1)
    return -(lp.exp().detach() * lp).sum() / (num_items if num_items is not None else y.numel())


def ref_infosft(logits, labels, num_items=None, P=0.93):
    """InfoSFT as published: w = sg(p) * relu(1 - sg(log(p / (1 - p))) / C), C = log(P / (1 - P)); loss = -w log p."""
    z, y = _shifted(logits, labels)
    lp = torch.log_softmax(z.double(), -1).gather(-1, y[:, None]).squeeze(-1)
    p = lp.exp().detach()
    w = p * torch.relu(1 - torch.log(p / (1 - p)) / math.log(P / (1 - P)))
    return (-(w * lp).sum() / (num_items if num_items is not None else y.numel())).float()


def ref_target_uniform(logits, labels, gamma, num_items=None):
    """Label smoothing as Target-SFT: Q = gamma onehot(y) + (1 - gamma) / V; loss = -sum_k Q_k log p_k."""
    z, y = _shifted(logits, labels)
    lsm = torch.log_softmax(z.float(), -1)
    V = z.shape[-1]
    q = torch.full_like(lsm, (1 - gamma) / V)
    q[torch.arange(len(y)), y] += gamma
    return -(q * lsm).sum() / (num_items if num_items is not None else y.numel())


def ref_eaft(logits, labels, num_items=None, k=20, alpha=1.0):
    """EAFT as published: w = sg(H_k / ln k) ** alpha, H_k the entropy of the softmax over the k largest logits."""
    z, y = _shifted(logits, labels)
    lp = torch.log_softmax(z.double(), -1).gather(-1, y[:, None]).squeeze(-1)
    k = min(k, z.shape[-1])
    q = torch.softmax(z.double().sort(-1, descending=True).values[:, :k], -1)
    w = ((-(q * q.log()).sum(-1)) / math.log(k)) ** alpha
    return (-(w.detach() * lp).sum() / (num_items if num_items is not None else y.numel())).float()


def ref_power(logits, labels, num_items=None, alpha=1.0, window=None, q=0.5):
    """Beyond Log Likelihood (arXiv 2510.00526): f(p) = (1 - p^alpha) / alpha per token (-log p at alpha 0), 0 outside
    the window (p >= q: top, p <= q: bottom), summed over the batch's tokens and divided by all of them."""
    z, y = _shifted(logits, labels)
    lp = torch.log_softmax(z.double(), -1).gather(-1, y[:, None]).squeeze(-1)
    f = -lp if alpha == 0 else (1 - lp.exp() ** alpha) / alpha
    p = lp.detach().exp()
    inside = {None: torch.ones_like(p), "top": (p >= q).double(), "bottom": (p <= q).double()}[window]
    return ((f * inside).sum() / (num_items if num_items is not None else y.numel())).float()


CASES = [
    ("sft", {}, ref_sft),
    ("dft", {}, ref_dft),
    ("infosft", {}, ref_infosft),
    ("infosft", {"infosft_p": 0.8}, lambda l, y, n=None: ref_infosft(l, y, n, P=0.8)),
    ("eaft", {"eaft_k": 4, "eaft_alpha": 1.5}, lambda l, y, n=None: ref_eaft(l, y, n, k=4, alpha=1.5)),
    ("target-sft", {"target_gamma": "0.7", "target_residual": "uniform"},
     lambda l, y, n=None: ref_target_uniform(l, y, 0.7, n)),
    ("sft", {"token_weight": "power", "power_alpha": 1.0}, lambda l, y, n=None: ref_power(l, y, n)),
    ("sft", {"token_weight": "power", "power_alpha": 0.3, "power_window": "top", "power_q": 0.1},
     lambda l, y, n=None: ref_power(l, y, n, alpha=0.3, window="top", q=0.1)),
    ("sft", {"token_weight": "power", "power_alpha": 0.0, "power_window": "bottom", "power_q": 0.1},
     lambda l, y, n=None: ref_power(l, y, n, alpha=0.0, window="bottom", q=0.1)),
]


@pytest.mark.parametrize("name,settings,ref", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_value_and_gradient_match_reference(name, settings, ref):
    logits, labels = _batch()
    fn = compute_loss_func(name, **settings)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    mine = fn(SimpleNamespace(logits=a), labels)
    theirs = ref(b, labels)
    mine.backward()
    theirs.backward()
    assert mine.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4), (a.grad - b.grad).abs().max()
    assert a.grad[1, 5:].abs().max() == 0  # padding positions (and the last position of each row) get no gradient


@pytest.mark.parametrize("name,settings,ref", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_micro_batches_sum_to_the_step(name, settings, ref):
    """transformers passes the step's token count to every micro-batch: the micro-batch losses add up to the step's."""
    logits, labels = _batch(seed=1, B=4)
    fn = compute_loss_func(name, **settings)
    K = int((labels[:, 1:] != -100).sum())
    whole = fn({"logits": logits}, labels)
    parts = sum(fn({"logits": logits[i:i + 2]}, labels[i:i + 2], num_items_in_batch=torch.tensor(K)) for i in (0, 2))
    assert parts.item() == pytest.approx(whole.item(), rel=1e-6)
    assert whole.item() == pytest.approx(ref(logits, labels).item(), rel=1e-5)


def test_target_sft_model_residual_with_gamma_p_is_dft_in_gradient():
    """gamma = sg(p_y) with the model's own distribution as residual has DFT's gradient (the design note)."""
    logits, labels = _batch(seed=2)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    compute_loss_func("target-sft", target_gamma="p", target_residual="model")(SimpleNamespace(logits=a), labels).backward()
    ref_dft(b, labels).backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4)


def test_refuses_what_a_loss_function_cannot_do():
    with pytest.raises(ConfigError, match="SFTGoSFTTrainer"):
        compute_loss_func("sft-go")
    with pytest.raises(ConfigError, match="SFTGoSFTTrainer"):
        compute_loss_func("rho1", ref_model_name_or_path="initial")
    with pytest.raises(ConfigError, match="reference model"):
        compute_loss_func("target-sft", target_residual="reference")
    with pytest.raises(ConfigError, match="reference model beside"):
        compute_loss_func("asft", ref_model_name_or_path="initial")
    with pytest.raises(ConfigError, match="ref_model_name_or_path: objective=asft"):
        compute_loss_func("asft")
    with pytest.raises(ConfigError, match="infosft_p"):
        compute_loss_func("infosft", infosft_p=0.3)
    with pytest.raises(ConfigError, match="did you mean infosft_p"):
        compute_loss_func("infosft", infosft_P=0.9)
    with pytest.raises(ConfigError, match="objective"):
        compute_loss_func("nope")
    # PriFT's static weights come from a reference pass before training: not a loss function's inputs
    for settings in ({"token_weight": "prift_prob"}, {"token_weight": "prift_mass", "ref_model_name_or_path": "initial"}):
        with pytest.raises(ConfigError, match=f"token_weight '{settings['token_weight']}' reads ref_logp.*SFTGoSFTTrainer"):
            compute_loss_func("sft", **settings)
