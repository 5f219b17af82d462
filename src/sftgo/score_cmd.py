"""``sftgo score``: compute token importance with one or more scorers and show it.

    sftgo score --dataset D --model_name_or_path M --scorer tfidf,llmlingua2,reference --percentile 90 \\
                --output_dir OUT [--num_examples 20] [--max_length 512] [--llmlingua2_model PATH] \\
                [--ref_model_name_or_path REF] [--cache_dir DIR]

Scores are computed over the WHOLE dataset (TF-IDF and frequency need corpus statistics) through the score
cache (:mod:`sftgo.cache`, same keys as ``sftgo train``, so a second run -- or a training run -- reuses them),
then grouped per sequence at percentile eta (top ``100 - eta`` % important). The ``reference`` scorer is Rho-1's
excess loss at the start of training, ``log p_REF(token) - log p_M(token)`` (the model's loss minus the reference's),
from the model ``M`` and the reference model ``REF`` (both forwards cached, shared with ``sftgo train``). Writes:

- ``OUT/importance.html``: the first ``num_examples`` examples, each supervised token coloured by its score
  (per scorer, normalized to [0, 1] between the scorer's 1st and 99th percentile over the dataset), tokens of
  the important group outlined and underlined, the scorers side by side per example (like the SFT-GO paper's
  Figures 5-7). Hover a token for its exact score.
- ``OUT/stats.json``: per scorer the fraction of tokens marked important, the mean/std score, the tokens most
  often marked important (decoded strings, counts, and the fraction of that token's occurrences marked
  important), cache hit/miss and time; and the pairwise Jaccard overlap of the important sets,
  ``|A & B| / |A | B|`` over all (example, token) positions.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["main", "build_parser", "score_dataset", "importance_stats", "render_html"]


def build_parser() -> argparse.ArgumentParser:
    from .cliargs import ArgumentParser
    from .scorers import SCORERS

    p = ArgumentParser(
        prog="sftgo score",
        description="Token importance heatmap (importance.html) and statistics (stats.json) for one or more scorers.",
    )
    p.add_argument("--dataset", default=None, help="JSON/JSONL file or Hub dataset id (default: the built-in dataset).")
    p.add_argument("--model_name_or_path", default=None, help="Model whose tokenizer defines the tokens (default: SmolLM2-135M-Instruct).")
    names = [n + (" (Rho-1 excess loss; needs --ref_model_name_or_path)" if s.needs_reference
                  else " (Token Cleaning's influence, the same values here; needs --ref_model_name_or_path)"
                  if s.reference_gap else "") for n, s in SCORERS.items()]
    p.add_argument("--scorer", default="tfidf,frequency,random",
                   help=f"Comma-separated scorers: {', '.join(names)}, or my_module:my_function.")
    p.add_argument("--percentile", type=float, default=90.0, help="eta: the top (100 - eta)%% of each sequence is important (default 90).")
    p.add_argument("--output_dir", required=True, help="Where importance.html and stats.json are written.")
    p.add_argument("--num_examples", type=int, default=20, help="Examples rendered in importance.html (scores use all).")
    p.add_argument("--max_length", type=int, default=512, help="Tokens per example (right-truncated).")
    declared = {s.name: s for spec in SCORERS.values() for s in (*spec.settings, *spec.run_settings)}
    for s in declared.values():  # each scorer's settings, as it declares them (--seed, --llmlingua2_model, ...)
        p.add_argument(s.flag, type=s.type, default=s.default, help=f"{s.help} (default {s.default})")
    p.add_argument("--ref_model_name_or_path", default=None,
                   help="Reference model of the reference scorer (e.g. runs/ref/final from `sftgo train --objective sft "
                        "--output_dir runs/ref`), or 'initial' (the model itself: every excess loss is zero).")
    p.add_argument("--model_dtype", default="auto", help="dtype of the models the reference scorer runs (auto: fp32 on CPU).")
    p.add_argument("--ref_batch_size", type=int, default=8, help="Sequences per forward pass of the reference scorer.")
    p.add_argument("--truth", default=None, metavar="SCORER",
                   help="A scorer (my_module:my_function) whose positive scores mark the tokens known to be important "
                        "(a synthetic set): stats.json then gives each scorer's precision and recall against them.")
    p.add_argument("--top_tokens", type=int, default=25, help="Most-often-important tokens listed per scorer in stats.json.")
    p.add_argument("--cache_dir", default=None, help="Score cache (default $SFTGO_CACHE/scores or ~/.cache/sftgo/scores); tokenized data goes to DIR/tokenized.")
    return p


def score_dataset(data, tokenizer, scorer_names: list[str], args) -> tuple[dict, dict]:
    """Scores of every scorer over the whole dataset, through the cache.

    Returns ``(scores: {name: [np.ndarray n_i]}, info: {name: {"cache": "hit"|"miss"|"off", "seconds": float}})``.
    """
    from .pipeline import score_tokens, scorer_settings
    from .scorers import scorer_spec

    scores, info = {}, {}
    for name in scorer_names:
        spec = scorer_spec(name)
        if spec.uses_reference_model:  # influence = the excess loss before training, what is shown here
            t0 = time.perf_counter()
            scores[name], state = excess_loss_scores(data, tokenizer, args)
            info[name] = {"cache": state, "seconds": round(time.perf_counter() - t0, 4)}
            logger.info("scorer %s: %s (%.2f s)", name, state, info[name]["seconds"])
            continue
        settings = scorer_settings(name, tokenizer, args)
        run = spec.run_kwargs(args) or None
        t0 = time.perf_counter()
        out, state = score_tokens(name, data, tokenizer, settings, args.cache_dir, run_settings=run)
        scores[name] = [np.asarray(s, dtype=np.float64) for s in out]
        info[name] = {"cache": state, "seconds": round(time.perf_counter() - t0, 4)}
        logger.info("scorer %s: %s (%.2f s)", name, state, info[name]["seconds"])
    return scores, info


def excess_loss_scores(data, tokenizer, args) -> tuple[list[np.ndarray], str]:
    """Rho-1's excess loss of every supervised token before training: ``log p_ref - log p_model`` (N float64 arrays),
    and "hit" when both log-prob sets came from the cache, else "miss"."""
    from .pipeline import INITIAL, cached_token_logp, warn_initial_reference

    kw = dict(dtype=args.model_dtype, cache_dir=args.cache_dir, batch_size=args.ref_batch_size)
    cur, s1 = cached_token_logp(args.model_name_or_path, data, tokenizer, **kw)
    if args.ref_model_name_or_path == INITIAL:
        warn_initial_reference(args.model_name_or_path)
        ref, s2 = cur, s1
    else:
        ref, s2 = cached_token_logp(args.ref_model_name_or_path, data, tokenizer, **kw)
    out = [np.asarray(r, dtype=np.float64) - np.asarray(c, dtype=np.float64) for r, c in zip(ref, cur)]
    return out, "hit" if (s1, s2) == ("hit", "hit") else "miss"


def _decode(tokenizer, tid: int) -> str:
    try:
        return tokenizer.decode([int(tid)])
    except Exception:  # a user's tokenizer may not decode single ids; the id is still informative
        return f"<id {int(tid)}>"


def recovery(important: np.ndarray, truth: np.ndarray) -> dict:
    """Precision (the share of the important group that is truly important) and recall (the share of the truly
    important tokens in the important group) of one grouping, over flat bool arrays of the same tokens."""
    hits = int((important & truth).sum())
    n_imp, n_true = int(important.sum()), int(truth.sum())
    return {"precision": round(hits / n_imp, 4) if n_imp else None, "recall": round(hits / n_true, 4) if n_true else None,
            "true_positives": hits}


def importance_stats(scores: dict, groups: dict, token_ids: list[list[int]], tokenizer, top: int = 25,
                     truth: list[np.ndarray] | None = None) -> dict:
    """stats.json content. scores/groups: {name: N arrays [n_i]}; token_ids: N supervised id lists; truth: N bool
    arrays marking the tokens known to be important (adds each scorer's precision and recall)."""
    flat_ids = np.concatenate([np.asarray(t, dtype=np.int64) for t in token_ids]) if token_ids else np.zeros(0, np.int64)
    occurrences = Counter(flat_ids.tolist())
    per = {}
    flat_groups = {}
    for name, sc in scores.items():
        s = np.concatenate(sc) if sc else np.zeros(0)
        g = np.concatenate(groups[name]) if groups[name] else np.zeros(0, bool)
        flat_groups[name] = g
        imp = Counter(flat_ids[g].tolist())
        per[name] = {
            "fraction_important": float(g.mean()) if g.size else 0.0,
            "num_important": int(g.sum()),
            "mean_score": float(np.nanmean(s)) if s.size else 0.0,
            "std_score": float(np.nanstd(s)) if s.size else 0.0,
            "top_important_tokens": [
                {"token": _decode(tokenizer, tid), "id": int(tid), "count": int(c),
                 "fraction_of_occurrences": round(c / occurrences[tid], 4)}
                for tid, c in imp.most_common(top)
            ],
        }
        if truth is not None:
            per[name].update(recovery(g, np.concatenate(truth) if truth else np.zeros(0, bool)))
    names = list(scores)
    jac = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            union = int((flat_groups[a] | flat_groups[b]).sum())
            inter = int((flat_groups[a] & flat_groups[b]).sum())
            jac[f"{a}|{b}"] = round(inter / union, 4) if union else 1.0
    out = {"num_examples": len(token_ids), "num_tokens": int(flat_ids.size), "scorers": per, "jaccard": jac}
    if truth is not None:
        out["truth_fraction"] = float(np.concatenate(truth).mean()) if truth and flat_ids.size else 0.0
    return out


def _normalizer(sc: list[np.ndarray]):
    s = np.concatenate(sc) if sc else np.zeros(0)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return lambda x: np.zeros_like(x)
    lo, hi = np.percentile(s, [1, 99])
    if hi <= lo:
        lo, hi = float(s.min()), float(s.max())
    span = hi - lo if hi > lo else 1.0
    return lambda x: np.clip((np.nan_to_num(x, nan=lo) - lo) / span, 0.0, 1.0)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1800px}
h1{font-size:20px} h2{font-size:15px;margin:28px 0 6px}
table.stats{border-collapse:collapse;font-size:13px;margin:8px 0}
table.stats td,table.stats th{border:1px solid #ccc;padding:3px 8px;text-align:right}
.prompt{font-size:12px;color:#555;background:#f6f6f6;padding:6px 8px;white-space:pre-wrap;max-height:7em;overflow:auto;border-radius:4px}
.grid{display:grid;gap:10px;margin-top:6px}
.col{border:1px solid #ddd;border-radius:4px;padding:6px 8px}
.col h3{font-size:13px;margin:0 0 4px;color:#444}
.seq{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;line-height:1.9;white-space:pre-wrap;word-break:break-word}
.t{border-radius:2px;padding:1px 0}
.t.imp{outline:2px solid #b00020;text-decoration:underline;text-decoration-color:#b00020;text-decoration-thickness:2px;font-weight:600}
.nl{color:#999}
.legend span{display:inline-block;padding:2px 8px;margin-right:4px;font-size:12px}
"""


def _color(v: float) -> str:
    # white (0) -> orange-yellow (1); light enough that black text stays readable
    r, g, b = 255, int(round(255 - 120 * v)), int(round(255 - 230 * v))
    return f"rgb({r},{g},{b})"


def _render_tokens(text: str, spans: np.ndarray, norm: np.ndarray, raw: np.ndarray, imp: np.ndarray) -> str:
    out = []
    prev_end = None
    for (s, e), v, r, g in zip(spans.tolist(), norm.tolist(), raw.tolist(), imp.tolist()):
        if prev_end is not None and s > prev_end:
            gap = text[prev_end:s]
            out.append(html.escape(gap) if gap.isspace() else '<span class="nl"> \u2026 </span>')
        piece = text[s:e]
        shown = html.escape(piece).replace("\n", '<span class="nl">\u21b5</span>\n')
        if not piece:
            shown = '<span class="nl">\u2205</span>'
        cls = "t imp" if g else "t"
        out.append(f'<span class="{cls}" style="background:{_color(v)}" title="{html.escape(repr(piece))} '
                   f'score={r:.4g}{" important" if g else ""}">{shown}</span>')
        prev_end = e if prev_end is None else max(prev_end, e)
    return "".join(out)


def render_html(data, scores: dict, groups: dict, stats: dict, num_examples: int, percentile: float, title: str) -> str:
    """importance.html: summary tables, then per example the prompt and one column per scorer."""
    names = list(scores)
    norms = {n: _normalizer(scores[n]) for n in names}
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sftgo token importance</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Token importance: {html.escape(title)}</h1>",
        f"<p>{stats['num_examples']} examples, {stats['num_tokens']} supervised tokens; eta = {percentile:g}: "
        f"the top {100 - percentile:g}% of each response (outlined, underlined, bold) are <b>important</b>. "
        "Colour = score, normalized per scorer between its 1st and 99th percentile over the dataset. "
        "Hover a token for its score.</p>",
        "<div class='legend'>" + "".join(f"<span style='background:{_color(v)}'>{v:.2f}</span>" for v in np.linspace(0, 1, 6))
        + "<span class='t imp' style='background:#fff'>important</span></div>",
        "<table class='stats'><tr><th>scorer</th><th>fraction important</th><th>mean score</th><th>std</th>"
        "<th style='text-align:left'>most often important</th></tr>",
    ]
    for n in names:
        st = stats["scorers"][n]
        top = ", ".join(repr(t["token"]) for t in st["top_important_tokens"][:10])
        parts.append(f"<tr><td>{html.escape(n)}</td><td>{st['fraction_important']:.4f}</td><td>{st['mean_score']:.4g}</td>"
                     f"<td>{st['std_score']:.4g}</td><td style='text-align:left'>{html.escape(top)}</td></tr>")
    parts.append("</table>")
    if len(names) > 1:
        parts.append("<table class='stats'><tr><th>Jaccard of important sets</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>")
        for a in names:
            row = []
            for b in names:
                v = 1.0 if a == b else stats["jaccard"].get(f"{a}|{b}", stats["jaccard"].get(f"{b}|{a}"))
                row.append(f"<td>{v:.3f}</td>")
            parts.append(f"<tr><td>{html.escape(a)}</td>{''.join(row)}</tr>")
        parts.append("</table>")
    cols = f"grid-template-columns:repeat({min(len(names), 3)},minmax(0,1fr))"
    for i in range(min(num_examples, len(data))):
        _, spans = data.supervised(i)
        text = data.texts[i]
        first = int(spans[:, 0].min()) if len(spans) else len(text)
        parts.append(f"<h2>Example {i}</h2><div class='prompt'>{html.escape(text[:first])}</div><div class='grid' style='{cols}'>")
        for n in names:
            raw = scores[n][i]
            body = _render_tokens(text, spans, norms[n](raw), raw, groups[n][i])
            parts.append(f"<div class='col'><h3>{html.escape(n)}</h3><div class='seq'>{body}</div></div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``sftgo score``; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    from .scorers import scorer_spec

    names = [s.strip() for s in args.scorer.split(",") if s.strip()]
    try:
        if not names:
            raise ValueError("--scorer is empty; give e.g. --scorer tfidf,frequency")
        if len(set(names)) != len(names):
            raise ValueError(f"--scorer lists a scorer twice: {args.scorer!r}")
        specs = [scorer_spec(n, load=True) for n in names]  # fail on a typo before loading anything
        if args.truth:
            scorer_spec(args.truth, load=True)
        with_reference = [s.name for s in specs if s.uses_reference_model]
        if with_reference and not args.ref_model_name_or_path:
            from .config import missing_reference  # (imports transformers' TrainingArguments: only here)

            raise ValueError(missing_reference(f"scorer={with_reference[0]}"))
        if args.ref_batch_size < 1:
            raise ValueError(f"--ref_batch_size must be >= 1, got {args.ref_batch_size}")
        if not 0 <= args.percentile <= 100:
            raise ValueError(f"--percentile must be in [0, 100] (eta = 90 marks the top 10%), got {args.percentile}")
        if args.num_examples < 0:
            raise ValueError(f"--num_examples must be >= 0, got {args.num_examples}")
    except ValueError as e:
        print(f"sftgo score: error: {e}", file=sys.stderr)
        return 2
    from .hub import check_sources

    # offline: one line now, not a minute of retries and a traceback
    check_sources(model=args.model_name_or_path, datasets=(("--dataset", args.dataset),),
                  reference=args.ref_model_name_or_path if with_reference else None,
                  scorer_models=[m for s in specs for m in s.hub_models(args)])

    from .data import load_examples, tokenize_cached, tokenized_cache_dir
    from .models import load_tokenizer

    t0 = time.perf_counter()
    tokenizer = load_tokenizer(args.model_name_or_path)
    examples = load_examples(args.dataset)
    data = tokenize_cached(examples, tokenizer, args.max_length, cache_dir=tokenized_cache_dir(args.cache_dir))
    t_data = time.perf_counter() - t0
    scores, info = score_dataset(data, tokenizer, names, args)
    from .grouping import percentile_groups

    groups = {n: percentile_groups(scores[n], args.percentile) for n in names}
    truth = None
    if args.truth:
        known = scores[args.truth] if args.truth in scores else score_dataset(data, tokenizer, [args.truth], args)[0][args.truth]
        truth = [np.asarray(k) > 0 for k in known]
    stats = importance_stats(scores, groups, data.supervised_ids(), tokenizer, args.top_tokens, truth=truth)
    if truth is not None:
        stats["truth"] = args.truth
    stats.update({
        "dataset": str(args.dataset or "builtin:default"), "tokenizer": getattr(tokenizer, "name_or_path", ""), "percentile": args.percentile,
        "max_length": args.max_length, "num_dropped": int(data.num_dropped), "data_seconds": round(t_data, 3),
    })
    for n in names:
        stats["scorers"][n].update(info[n])
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False))
    title = f"{args.dataset or 'built-in dataset'} / {getattr(tokenizer, 'name_or_path', '')}"
    (out / "importance.html").write_text(
        render_html(data, scores, groups, stats, args.num_examples, args.percentile, title), encoding="utf-8"
    )
    if truth is not None:
        for n in names:
            st = stats["scorers"][n]
            print(f"{n}: precision {st['precision']}, recall {st['recall']} against {args.truth} "
                  f"(eta {args.percentile:g}; {stats['truth_fraction']:.4f} of the tokens known important)")
    caches = ", ".join(f"{n}: {info[n]['cache']}" for n in names)
    print(f"wrote {out / 'importance.html'} and {out / 'stats.json'} ({caches})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
