"""Packed and padding-free batches: the collator keeps every per-token column with its tokens, and no attention
crosses an example boundary (eager and sdpa, the implementations that run on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sftgo.data import IGNORE_INDEX, Collator, model_inputs, pack_rows
from tests.conftest import build_tiny_model

VOCAB = 64


def _items(lengths, seed=0):
    """Distinct examples: random ids, a prompt of 2 tokens, supervised rest, an importance column 1..n_sup."""
    g = np.random.default_rng(seed)
    out = []
    for L in lengths:
        ids = g.integers(1, VOCAB, size=L).tolist()
        labels = [IGNORE_INDEX, IGNORE_INDEX] + ids[2:]
        imp = np.zeros(L, dtype=np.float32)
        imp[2:] = g.random(L - 2).astype(np.float32) + 1
        out.append({"input_ids": ids, "labels": labels, "importance": imp})
    return out


def test_pack_rows_first_fit_decreasing():
    rows = pack_rows([5, 3, 4, 2, 6], capacity=8)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 4, 2, 6][i] for i in r) <= 8 for r in rows)
    # First-fit decreasing needs 3 rows (loads 8, 8, 4); spread over 3 rows, longest first to the least-loaded row
    # that fits: 6 | 5 | 4, then 3 -> the row holding 4, 2 -> the row holding 5: loads 6, 7, 7 (indices sorted in a row)
    assert rows == [[4], [0, 3], [1, 2]]
    # Eight equal examples: first-fit fills one row with 5 and leaves 3 in the next (padded to 500 tokens each);
    # the spread makes two rows of 4 (400 each).
    assert sorted(len(r) for r in pack_rows([100] * 8, capacity=512)) == [4, 4]
    assert pack_rows([5, 3], capacity=None) == [[0, 1]]
    assert pack_rows([9, 2], capacity=8) == [[0], [1]]  # too long for a row: a row of its own


@pytest.mark.parametrize("layout", ["packed", "padding_free"])
def test_collator_keeps_columns_with_their_tokens(layout):
    items = _items([7, 4, 9, 3])
    batch = Collator(pad_token_id=0, layout=layout, max_length=12)(items)
    assert "attention_mask" not in batch
    ex = batch["example_index"]
    if layout == "padding_free":
        assert ex.shape[0] == 1 and (ex >= 0).all()  # one row, no padding
    else:
        assert ex.shape[0] < len(items) and ex.shape[1] <= 12
    for i, it in enumerate(items):
        sel = ex == i
        L = len(it["input_ids"])
        assert int(sel.sum()) == L
        assert batch["input_ids"][sel].tolist() == it["input_ids"]
        assert batch["position_ids"][sel].tolist() == list(range(L))
        assert batch["labels"][sel].tolist() == [IGNORE_INDEX] + it["labels"][1:]
        assert torch.equal(batch["importance"][sel], torch.as_tensor(it["importance"]))
    pad = ex == -1
    assert (batch["labels"][pad] == IGNORE_INDEX).all() and (batch["importance"][pad] == 0).all()
    # Every row's positions restart at 0 at each block start (examples and the padding tail).
    for r in range(ex.shape[0]):
        starts = (batch["position_ids"][r] == 0).nonzero().flatten().tolist()
        blocks = [e for e in ex[r].tolist()]
        assert starts == [t for t in range(len(blocks)) if t == 0 or blocks[t] != blocks[t - 1]]


def test_packed_first_token_is_never_a_target():
    # An example whose first token is labelled: in a padded row the shift drops it; in a packed row it must not
    # become the target of the previous example's last position.
    items = [{"input_ids": [3, 4, 5], "labels": [3, 4, 5]}, {"input_ids": [6, 7], "labels": [6, 7]}]
    packed = Collator(0, layout="padding_free")(items)
    padded = Collator(0)(items)
    assert packed["labels"].tolist() == [[-100, 4, 5, -100, 7]]
    assert int((packed["labels"][:, 1:] != IGNORE_INDEX).sum()) == int((padded["labels"][:, 1:] != IGNORE_INDEX).sum())


def test_flash_attention_kwargs_match_transformers():
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    items = _items([7, 4, 9, 3])
    batch = Collator(0, layout="packed", max_length=12, flash_attn_kwargs=True)(items)
    # transformers' own derivation from the flattened position ids (what the varlen kernel would get from them)
    (cu_q, cu_k), (mq, mk) = prepare_fa_kwargs_from_position_ids(batch["position_ids"].reshape(1, -1))
    assert batch["cu_seq_lens_q"].tolist() == cu_q.tolist() == cu_k.tolist()
    assert batch["cu_seq_lens_q"].dtype == torch.int32
    assert batch["max_length_q"] == batch["max_length_k"] == int(mq) == int(mk) == 9
    assert batch["cu_seq_lens_q"][-1] == batch["input_ids"].numel()


def _logits(model, batch):
    with torch.no_grad():
        return model(**model_inputs(batch)).logits


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("layout", ["packed", "padding_free"])
def test_no_attention_crosses_an_example_boundary(impl, layout):
    model = build_tiny_model(VOCAB)
    model.config._attn_implementation = impl
    model.eval()  # eval mode: the KV cache default would switch packed-sequence detection off (model_inputs stops it)
    items = _items([9, 5, 6, 3], seed=1)
    collate = Collator(0, layout=layout, max_length=16)
    batch = collate(items)
    if layout == "packed":
        assert batch["input_ids"].shape[0] < len(items)  # the test needs rows holding several examples
    out = _logits(model, batch)
    ex = batch["example_index"]
    for i, it in enumerate(items):
        alone = _logits(model, Collator(0)([it]))[0]
        torch.testing.assert_close(out[ex == i], alone, atol=1e-5, rtol=1e-5)
    # Perturb example 1's tokens: every other example's logits stay exactly where they were.
    changed = [dict(it) for it in items]
    changed[1]["input_ids"] = [(t * 7 + 3) % (VOCAB - 1) + 1 for t in items[1]["input_ids"]]
    batch2 = collate(changed)
    assert torch.equal(batch2["example_index"], ex)
    out2 = _logits(model, batch2)
    others = (ex >= 0) & (ex != 1)
    assert torch.equal(out2[others], out[others])
    assert not torch.allclose(out2[ex == 1], out[ex == 1])


def _mean_ce(model, batch):
    """Plain mean token cross-entropy of the supervised tokens (the slow obvious reference)."""
    logits = model(**model_inputs(batch)).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    m = targets != IGNORE_INDEX
    return torch.nn.functional.cross_entropy(logits[m], targets[m], reduction="sum") / m.sum()


def test_packed_padding_free_and_padded_give_the_same_loss_and_gradients():
    items = _items([9, 5, 6, 3, 11], seed=2)
    results = {}
    for layout in ("padded", "packed", "padding_free"):
        model = build_tiny_model(VOCAB)
        model.config._attn_implementation = "sdpa"
        loss = _mean_ce(model, Collator(0, layout=layout, max_length=16)(items))
        loss.backward()
        results[layout] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    ref_loss, ref_grads = results["padded"]
    for layout in ("packed", "padding_free"):
        loss, grads = results[layout]
        torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
        for n in ref_grads:
            torch.testing.assert_close(grads[n], ref_grads[n], atol=1e-5, rtol=1e-5, msg=lambda m: f"{layout} {n}: {m}")


def test_collator_rejects_bad_layout():
    with pytest.raises(ValueError, match="layout"):
        Collator(0, layout="stacked")
    with pytest.raises(ValueError, match="max_length"):
        Collator(0, layout="packed")


def test_token_batch_is_the_same_in_every_layout():
    # TokenBatch orders supervised tokens by (example, position) whatever the layout: the flat columns of a packed or
    # padding-free batch equal the padded batch's, so batch-scope ties (Rho-1's top-k) are broken the same way.
    from sftgo.tokens import TokenBatch

    items = _items([9, 5, 6, 3, 11, 4], seed=3)
    flat = {}
    for layout in ("padded", "packed", "padding_free"):
        batch = Collator(0, layout=layout, max_length=16)(items)
        tb = TokenBatch.from_inputs(batch)
        flat[layout] = (tb.targets, tb.example, tb.columns["importance"])
        # the selected features are the positions that predict those targets
        ids = batch["input_ids"][:, 1:].reshape(-1).index_select(0, tb.rows)
        assert torch.equal(ids, tb.targets)
    assert Collator(0, layout="packed", max_length=16)(items)["input_ids"].shape[0] < len(items)
    for layout in ("packed", "padding_free"):
        for a, b in zip(flat["padded"], flat[layout]):
            assert torch.equal(a, b), layout
