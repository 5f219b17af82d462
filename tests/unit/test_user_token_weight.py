"""``--token_weight module:function`` (your own token weighting, tests/user_weights.py): it is the one formula
``c_n = w_n t_n f_g`` in every aggregator (its t_n the function's, called per chunk in the head with the inputs it
declares), the same as the built-in it re-implements, bad functions and bad values stop with one line naming the
function, and the name goes through config.yaml / resume, sweep names, report labels and compute_loss_func."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml

from sftgo.config import ConfigError, config_to_dict, parse_config
from sftgo.objectives import compute_loss_func
from tests.unit.test_objective_paths import (_check_data_weights, formula_steps, make_batch, make_trainer, peaked_model,
                                             train_path)

MIXED = "tests.user_weights:mixed"  # reads ref_logp, the entropy and the top-3 logits
ROW = "tests.user_weights:row_only"  # reads the entropy and the top-4 logits (no reference)
REF = {"ref_model_name_or_path": "initial"}

CASES = [  # (aggregator, settings, micro-batches)
    ("sft", {"token_weight": MIXED, **REF}, 2),
    ("sft", {"token_weight": ROW, "token_head": "chunked"}, 1),
    ("sft", {"token_weight": ROW, "token_head": "naive"}, 1),
    ("sft-go", {"token_weight": MIXED, **REF}, 2),  # the exact pre-pass computes t_n for the step's group sums
    ("sft-go", {"token_weight": MIXED, **REF}, 1),  # the micro-batch's own groups, in the fused head (GroupCoef)
    ("sft-go", {"token_weight": ROW, "num_groups": 3}, 2),
    ("rho1", {"token_weight": MIXED, "percentile": 60.0}, 2),
    ("sft-go-dro", {"token_weight": MIXED, "num_groups": 3, "dro_eta": 0.5, **REF}, 2),
]


def _ids(cases):
    return [f"{a}-{o['token_weight'].split(':')[1]}-{o.get('token_head', 'fused')}-mb{m}" for a, o, m in cases]


@pytest.mark.parametrize("aggregator,over,micro_batches", CASES, ids=_ids(CASES))
def test_user_function_is_the_formula_in_every_aggregator(tmp_path, aggregator, over, micro_batches):
    """Loss, every gradient, the carried state and the logged mean weight over two steps against the one formula,
    token by token, with t_n the user's function on each token's own inputs (tests/reference_objectives.user_weight)."""
    for *_, ref_t in formula_steps(tmp_path, aggregator, over, micro_batches):
        assert max(ref_t) > 1.5 * min(ref_t)  # the weights do vary from token to token


@pytest.mark.parametrize("aggregator,over,micro_batches", [("sft-go", {"token_weight": MIXED, **REF}, 1),
                                                           ("rho1", {"token_weight": ROW, "percentile": 60.0}, 2)],
                         ids=["sft-go-mixed-mb1", "rho1-row_only-mb2"])
def test_user_function_with_data_weights_is_the_formula(tmp_path, aggregator, over, micro_batches):
    _check_data_weights(tmp_path, aggregator, over, micro_batches)


@pytest.mark.parametrize("aggregator", ["sft", "sft-go"])
def test_user_dft_is_the_builtin_dft_bit_for_bit(tmp_path, aggregator):
    """``tests.user_weights:dft`` (``logp.exp()``) and ``--token_weight dft``: the same loss and gradients, exactly."""
    out = []
    for tw in ("dft", "tests.user_weights:dft"):
        model = peaked_model()
        trainer, _ = make_trainer(tmp_path, model, aggregator, token_weight=tw)
        out.append(train_path(trainer, model, [make_batch(5), make_batch(6)]))
    (l1, g1), (l2, g2) = out
    assert l1 == l2
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))


# ------------------------------------------------------------------------------------------------------- errors

def _logits():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 13, requires_grad=True)
    labels = torch.randint(0, 13, (2, 7))
    labels[:, :2] = -100
    return SimpleNamespace(logits=logits), labels


@pytest.mark.parametrize("name,words", [
    ("tests.no_such_module:f", ["cannot import module 'tests.no_such_module'", "PYTHONPATH"]),
    ("tests.user_weights:nope", ["module 'tests.user_weights' has no function 'nope'"]),
    ("tests.user_weights:not_a_function", ["has no function 'not_a_function'"]),
    ("tests.user_weights:", ["use the form 'my_module:my_function'"]),
    ("tests.user_weights:bad_needs", ["bad_needs.needs names 'perplexity'", "ref_logp, entropy, topk_logits"]),
    ("tests.user_weights:no_top_k", ["no_top_k.top_k", "integer >= 1"]),
    ("tests.user_weights:undeclared", ["undeclared(logp)", "undeclared.needs"]),
    (MIXED, ["ref_model_name_or_path", f"token_weight={MIXED} needs a reference model"]),
    ("dtf", ["'dtf' is not one of none, dft", "module:function"]),
])
def test_a_bad_function_is_one_line_at_config_time(name, words):
    with pytest.raises(ConfigError) as e:
        compute_loss_func("sft", token_weight=name)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(("token_weight", "ref_model_name_or_path"))
    for w in words:
        assert w in msg


@pytest.mark.parametrize("name,words", [
    ("wrong_shape", ["returned shape (1,) for", "one weight per token"]),
    ("a_float", ["returned float for", "one weight per token"]),
    ("with_nan", ["returned nan", "finite and >= 0"]),
    ("with_inf", ["returned inf", "finite and >= 0"]),
    ("negative", ["returned -", "finite and >= 0"]),
])
def test_a_bad_value_is_one_line_when_it_is_returned(name, words):
    fn = compute_loss_func("sft", token_weight=f"tests.user_weights:{name}")  # imports fine
    with pytest.raises(ConfigError) as e:
        fn(*_logits())
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"token_weight 'tests.user_weights:{name}' returned")
    for w in words:
        assert w in msg


def test_a_reference_reading_function_is_refused_by_compute_loss_func():
    with pytest.raises(ConfigError, match="needs ref_logp, which a compute_loss_func does not receive"):
        compute_loss_func("sft", token_weight=MIXED, ref_model_name_or_path="initial")


def test_compute_loss_func_runs_a_row_reading_function():
    out, labels = _logits()
    loss = compute_loss_func("sft", token_weight=ROW)(out, labels)
    loss.backward()
    assert torch.isfinite(loss) and out.logits.grad.abs().sum() > 0


# ------------------------------------------------------------------------- config.yaml, resume, names and labels

def test_the_name_is_recorded_and_a_changed_function_is_refused_on_resume(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    cfg = parse_config(["--model_name_or_path", "m", "--dataset", "d.jsonl", "--objective", "sft", "--token_weight",
                        "tests.user_weights:dft", "--output_dir", str(d), "--use_cpu", "true", "--report_to", "none"])
    saved = config_to_dict(cfg)
    assert saved["token_weight"] == "tests.user_weights:dft"
    (d / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    (d / "checkpoint-2").mkdir()
    again = parse_config(["--output_dir", str(d), "--resume_from_checkpoint", "last"])
    assert again.token_weight == "tests.user_weights:dft"
    with pytest.raises(ConfigError, match="token_weight: tests.user_weights:dft -> tests.user_weights:row_only"):
        parse_config(["--output_dir", str(d), "--resume_from_checkpoint", "last", "--token_weight", ROW])


def test_sweep_run_names_and_report_labels():
    from sftgo.report.runs import method_label
    from sftgo.sweep.plan import plan_runs
    from sftgo.sweep.spec import Spec

    spec = Spec(config={"objective": "sft"}, grid={"token_weight": ["dft", "tests.user_weights:dft"]},
                output_dir="/tmp/sweep")
    runs, points = plan_runs(spec)
    assert [p["name"] for p in points] == ["sft_dft", "sft_tests.user-weights-dft"]
    assert method_label({"objective": "sft", "token_weight": "tests.user_weights:dft"}, ["token_weight"]) == \
        "sft token_weight=tests.user_weights:dft"


def test_row_inputs_of_a_chunk_longer_than_the_entropy_block_are_each_rows_own(monkeypatch):
    """The entropy a function reads is the head's own of each row (the pass its metrics make, a block of rows at a time:
    no [chunk, V] softmax beside the tile, no second pass): every row of a chunk of 100 (more than one block) gets its
    own full-vocabulary entropy, and its own top-k logits, largest first (130 rows: a second chunk of 30); on the fused
    head with and without the logged metrics (then the logged entropy is the one the function read), in the grouped
    forward's three passes, and on the chunked and naive heads (differentiable log p)."""
    from sftgo.objectives.weightings.user import _checked, _row_inputs
    from sftgo.token_head import GroupCoef, TokenCoef, kernels, make_head, weighted_nll_rows

    monkeypatch.setattr(kernels, "_SCRATCH_ELEMS", 32 * 50)  # blocks of 32 rows at V = 50
    g = torch.Generator().manual_seed(3)
    h = torch.randn(130, 16, generator=g) * torch.linspace(0.1, 5.0, 130)[:, None]  # a spread of entropies
    W = torch.randn(50, 16, generator=g)
    t = torch.randint(0, 50, (130,), generator=g)
    z = h.double() @ W.double().T
    logq = torch.log_softmax(z, dim=-1)
    H = -(logq.exp() * logq).sum(-1)
    seen = []

    def spy(logp, *, entropy, topk_logits):
        seen.append((entropy.clone(), topk_logits.clone()))
        return logp.exp()

    needs = ("entropy", "topk_logits")
    coef = TokenCoef(1.0, of_row=_row_inputs(needs, 4), of_token=_checked("spy", spy, needs, 4))

    def check(stats=None, rows=slice(None)):
        ent, top = (torch.cat(x) for x in zip(*seen))
        seen.clear()
        torch.testing.assert_close(ent.double(), H[rows], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(top.double(), z.topk(4, dim=-1).values[rows], atol=1e-5, rtol=1e-5)
        if stats is not None:
            assert torch.equal(stats["entropy"], ent)

    weighted_nll_rows(h.clone().requires_grad_(), W.clone().requires_grad_(), t, coef, 100)
    check()  # no metrics recorded: the head computes the entropy for the function alone
    weighted_nll_rows(h, W.clone().requires_grad_(), t, coef, 100)
    check()  # no gradient for h (no grad_h GEMM to read it from): the chunk forward computes it
    stats = {}
    weighted_nll_rows(h.clone().requires_grad_(), W.clone().requires_grad_(), t, coef, 100, stats=stats)
    check(stats)
    model = SimpleNamespace(get_output_embeddings=lambda: torch.nn.Linear(16, 50, bias=False))
    lin = model.get_output_embeddings()
    with torch.no_grad():
        lin.weight.copy_(W)
    model.get_output_embeddings = lambda: lin
    for kind, x in (("chunked", h), ("naive", z.float())):
        head = make_head(kind, 100)
        head.weighted_nll(model, x.clone().requires_grad_(), t, coef, {})
        check()
    ids = (torch.arange(130) % 3 == 0).long()  # the grouped forward: pass A over group 1, B over group 0, C over 1
    gc = GroupCoef(ids, 2, lambda sums, counts: torch.ones_like(sums), coef)
    weighted_nll_rows(h.clone().requires_grad_(), W.clone().requires_grad_(), t, gc, 100)
    one, zero = (ids == 1).nonzero().squeeze(1), (ids == 0).nonzero().squeeze(1)
    check(rows=torch.cat([one, zero, one]))
