"""``entropy`` and ``token_accuracy``: recorded by the per-token head's chunk loops (fused, chunked, naive; the grouped
fused forward; Target-SFT's metrics pass; the EAFT row coefficient) and logged exact over the optimizer step, against
a full-logits computation."""

from __future__ import annotations

import math

import pytest
import torch

from sftgo.token_head import GroupCoef, LinearHead, LogitsHead, RowCoef
from tests.conftest import build_tiny_model
from tests.reference_objectives import groups_of, Tok

N, H, V = 41, 12, 53


class _Model(torch.nn.Module):
    """The LM head alone (what LinearHead reads)."""

    def __init__(self, weight):
        super().__init__()
        self.lm = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.lm.weight.data.copy_(weight)

    def get_output_embeddings(self):
        return self.lm


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, H, generator=g, dtype=torch.float64).float()
    W = torch.randn(V, H, generator=g) * 1.5  # peaked rows: entropies spread between ~0 and log V
    z = x @ W.T
    t = torch.randint(0, V, (N,), generator=g)
    hit = torch.rand(N, generator=g) < 0.5
    t[hit] = z.argmax(dim=-1)[hit]  # about half the targets are the argmax: accuracy far from 0 and 1
    return x, W, t


def _full(x, W, t):
    z = (x.double() @ W.double().T)
    q = torch.log_softmax(z, dim=-1)
    return -(q.exp() * q).sum(-1), z.argmax(-1) == t


HEADS = {
    "fused": lambda: LinearHead(7, fused=True),
    "chunked": lambda: LinearHead(7, fused=False),
    "naive": lambda: LogitsHead(),
}


@pytest.mark.parametrize("kind", list(HEADS))
@pytest.mark.parametrize("coef", ["one", "tensor", "callable", "group", "row"])
@pytest.mark.parametrize("grad", [True, False])
def test_head_records_entropy_and_accuracy_of_the_full_distribution(kind, coef, grad):
    x, W, t = _inputs()
    ent, cor = _full(x, W, t)
    assert 0.2 < cor.float().mean() < 0.8 and float(ent.min()) < 0.5 * float(ent.max())
    model = _Model(W)
    head = HEADS[kind]()
    feats = x.clone().requires_grad_(grad)
    if kind == "naive":
        feats = feats @ model.lm.weight.T  # the naive head's features are the full logits
    ids = (torch.arange(N) % 3 == 0).long()
    zeros = torch.rand(N, generator=torch.Generator().manual_seed(5))
    zeros[::4] = 0.0  # zero-coefficient rows (InfoSFT's confident tokens, Rho-1's dropped ones): no gradient, entropy kept
    c = {"one": 1.0, "tensor": zeros, "callable": lambda lp, s, e: lp.exp(),
         "group": GroupCoef(ids, 2, lambda sums, counts: torch.tensor([0.5, 2.0])),
         "row": RowCoef(lambda z: z.amax(-1).sigmoid())}[coef]
    stats: dict = {}
    with torch.set_grad_enabled(grad):
        loss, logp = head.weighted_nll(model, feats, t, c, stats)
    if grad and kind == "chunked":  # its entropy comes from the backward's grad_h GEMM: unknown (NaN) until then
        assert torch.isnan(stats["entropy"]).all()
    else:
        torch.testing.assert_close(stats["entropy"].double(), ent, atol=1e-5, rtol=0)
    assert torch.equal(stats["correct"], cor)
    assert stats["coef"].shape == (N,)
    if grad:  # recording changes nothing else: same loss, log p and gradients as the head without it
        got = torch.autograd.grad(loss, [x_ for x_ in (feats, model.lm.weight) if x_.requires_grad],
                                  retain_graph=kind == "naive")  # the naive head's logits graph is used twice
        loss0, logp0 = HEADS[kind]().weighted_nll(model, feats, t, c)
        want = torch.autograd.grad(loss0, [x_ for x_ in (feats, model.lm.weight) if x_.requires_grad])
        torch.testing.assert_close(loss, loss0)
        torch.testing.assert_close(logp, logp0)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(stats["entropy"].double(), ent, atol=1e-5, rtol=0)  # every head, after the backward
    stats = {}
    with torch.no_grad():  # the metrics pass of Target-SFT's chunk-loss path
        head.logp(model, feats.detach(), t, stats)
    torch.testing.assert_close(stats["entropy"].double(), ent, atol=1e-5, rtol=0)
    assert torch.equal(stats["correct"], cor)


def test_fused_head_without_hidden_gradient_records_the_same():
    """Only the LM head trains (hidden states without grad): the fused pass has no grad_h GEMM to read the entropy
    from and computes it from the tile; the weight's gradient is unchanged."""
    from sftgo.token_head import weighted_nll_rows

    x, W, t = _inputs(2)
    ent, cor = _full(x, W, t)
    c = lambda lp, s, e: lp.exp()  # noqa: E731
    w1, w2 = W.clone().requires_grad_(), W.clone().requires_grad_()
    stats: dict = {}
    weighted_nll_rows(x, w1, t, c, 7, stats=stats)[0].backward()
    weighted_nll_rows(x, w2, t, c, 7)[0].backward()
    torch.testing.assert_close(stats["entropy"].double(), ent, atol=1e-5, rtol=0)
    assert torch.equal(stats["correct"], cor)
    torch.testing.assert_close(w1.grad, w2.grad)


def test_chunked_head_without_hidden_gradient_records_the_entropy_in_its_forward():
    """Only the LM head trains: the chunked backward computes no grad_h GEMM to read the entropy from, so its forward
    computes it; the weight's gradient is unchanged."""
    x, W, t = _inputs(3)
    ent, cor = _full(x, W, t)
    m1, m2 = _Model(W), _Model(W)
    stats: dict = {}
    LinearHead(7, fused=False).weighted_nll(m1, x, t, 1.0, stats)[0].backward()
    LinearHead(7, fused=False).weighted_nll(m2, x, t, 1.0)[0].backward()
    torch.testing.assert_close(stats["entropy"].double(), ent, atol=1e-5, rtol=0)
    assert torch.equal(stats["correct"], cor)
    torch.testing.assert_close(m1.lm.weight.grad, m2.lm.weight.grad)


def test_row_coefficient_is_computed_from_the_logits_row():
    """A RowCoef (EAFT's) applied by every head equals the loss with the same weight computed from full logits."""
    x, W, t = _inputs(1)
    model = _Model(W)
    fn = lambda z: z.amax(-1).sigmoid()  # noqa: E731
    z = x @ W.T
    ref = -(fn(z) * torch.log_softmax(z, -1).gather(1, t[:, None]).squeeze(1)).sum()
    for kind, make in HEADS.items():
        feats = x.clone().requires_grad_()
        if kind == "naive":
            feats = feats @ model.lm.weight.T
        loss, _ = make().weighted_nll(model, feats, t, RowCoef(fn))
        torch.testing.assert_close(loss, ref, atol=1e-4, rtol=1e-5, msg=kind)


# ---------------------------------------------------------------------------------------------------------------
# through SFTGoTrainer: a real 2-micro-batch optimizer step, logged as in metrics.jsonl
# ---------------------------------------------------------------------------------------------------------------

VT, B, T = 48, 2, 11


def _batch(model, seed):
    """Padded rows; every other target is the model's own argmax (set left to right, so earlier logits stay valid)."""
    from tests.unit.test_objective_paths import make_batch

    b = make_batch(seed)
    ids = b["input_ids"]
    with torch.no_grad():
        for j in range(3, T - 1, 2):
            ids[:, j + 1] = model(input_ids=ids, attention_mask=b["attention_mask"]).logits[:, j].argmax(-1)
    b["labels"] = torch.where(b["labels"] == -100, b["labels"], ids)
    return b


def _reference(model, batches, eta):
    """Per-token full-vocabulary entropy and argmax == target over the step, and the important split (top
    (100 - eta)% per example by importance, as tests/reference_objectives.py groups)."""
    ents, cors, toks = [], [], []
    with torch.no_grad():
        for m, b in enumerate(batches):
            z = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1].double()
            q = torch.log_softmax(z, dim=-1)
            labels = b["labels"][:, 1:]
            for r in range(labels.shape[0]):
                for p in range(labels.shape[1]):
                    y = int(labels[r, p])
                    if y != -100:
                        ents.append(float(-(q[r, p].exp() * q[r, p]).sum()))
                        cors.append(float(int(z[r, p].argmax()) == y))
                        toks.append(Tok(None, None, y, (m, r), float(b["importance"][r, p + 1]), 0.0))
    ids = groups_of(toks, [t.importance for t in toks], eta=eta, num_groups=2, batch_scope=False, quantiles=False)
    mean = lambda v, sel: sum(x for x, s in zip(v, sel) if s) / sum(sel)  # noqa: E731
    imp = [i == 1 for i in ids]
    unimp = [not s for s in imp]
    everything = [True] * len(ids)
    return {"entropy": mean(ents, everything), "token_accuracy": mean(cors, everything),
            "entropy_important": mean(ents, imp), "entropy_unimportant": mean(ents, unimp),
            "token_accuracy_important": mean(cors, imp), "token_accuracy_unimportant": mean(cors, unimp)}


@pytest.mark.parametrize("objective,over", [("sft-go", {}), ("sft", {"token_head": "chunked"}),
                                            ("target-sft", {}), ("eaft", {"token_head": "naive"})])
def test_trainer_logs_metrics_exact_over_the_step(tmp_path, objective, over):
    from tests.unit.test_objective_paths import make_trainer, train_path

    model = build_tiny_model(VT, seed=3)
    trainer, cfg = make_trainer(tmp_path, model, objective, **over)
    batches = [_batch(model, 100), _batch(model, 101)]  # distinct micro-batches: a per-micro-batch mean would differ
    ref = _reference(model, batches, cfg.percentile)
    assert 0.1 < ref["token_accuracy"] < 0.9
    train_path(trainer, model, batches)
    logs = {"loss": 0.0}
    trainer.log(logs)
    for k, v in ref.items():
        assert logs[k] == pytest.approx(v, abs=1e-5), k

    # evaluation: the same sums over every evaluated batch, logged as eval_*
    model.eval()
    with torch.no_grad():
        for b in batches:
            trainer.compute_loss(model, b)
    logs = {"eval_loss": 0.0}
    trainer.log(logs)
    for k, v in ref.items():
        assert logs[f"eval_{k}"] == pytest.approx(v, abs=1e-5), k
    assert not any(math.isnan(v) for v in logs.values() if isinstance(v, float))
