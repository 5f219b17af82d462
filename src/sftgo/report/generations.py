"""Side-by-side answers to the same prompts (the SFT-GO paper's Appendix I): prompts as rows, runs as columns, read
from each run's ``generations/<prompts stem>.jsonl`` (written by ``sftgo generate``). Plain Python over JSON."""

from __future__ import annotations

from collections import Counter

from .runs import Group
from .tables import Table

CUT = " […]"  # marks an answer that stopped at max_new_tokens rather than at the end-of-turn token
EMPTY = "∅ (empty)"  # an answer without text (the model ended at once, or wrote only special tokens or whitespace)


def decoding(header: dict) -> str:
    """``greedy, at most 256 new tokens, float32 on cpu`` / ``sampled (seed 1, temperature 0.7, ...), ...``."""
    settings = header.get("settings") or {}
    if settings.get("do_sample"):
        how = (f"sampled (seed {settings.get('seed')}, temperature {settings.get('temperature')}, "
               f"top_p {settings.get('top_p')}, top_k {settings.get('top_k')})")
    else:
        how = "greedy"
    return f"{how}, at most {settings.get('max_new_tokens')} new tokens, {header.get('dtype')} on {header.get('device')}"


def prompt_text(messages: list[dict]) -> str:
    """The prompt cell: the user's text; a system prompt or earlier turns are shown with their roles."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n".join(f"[{m['role']}] {m['content']}" for m in messages)


def generation_tables(groups: list[Group]) -> list[Table]:
    """One table per prompts set (file stem + prompts digest) that some run answered; columns follow the groups'
    order (the SFT baseline first), one per run (a configuration with several seeds gets one column per seed)."""
    sets: dict[tuple[str, str], list] = {}
    for g in groups:
        for r in g.runs:
            for stem, gen in r.generations.items():
                digest = str((gen["header"].get("settings") or {}).get("prompts_sha256"))
                sets.setdefault((stem, digest), []).append((g, r, gen))
    stems = Counter(stem for stem, _ in sets)
    tables = []
    for (stem, digest), cols in sets.items():
        per_group = Counter(id(g) for g, _, _ in cols)
        labels = [g.label + (f" (seed {r.seed})" if per_group[id(g)] > 1 else "") for g, r, _ in cols]
        if len(set(labels)) < len(labels):  # still ambiguous (e.g. two runs with one seed): name the runs
            labels = [f"{lab} [{r.name}]" for lab, (_, r, _) in zip(labels, cols)]
        by_index = [{row.get("index"): row for row in gen["rows"]} for _, _, gen in cols]
        indices = sorted({i for rows in by_index for i in rows if isinstance(i, int)})
        first = {i: next(rows[i] for rows in by_index if i in rows) for i in indices}
        with_ref = any(first[i].get("reference") for i in indices)
        header = ["Prompt"] + (["reference answer"] if with_ref else []) + labels
        rows, cut, empty = [], False, False
        for i in indices:
            row = [prompt_text(first[i].get("messages") or [])]
            if with_ref:
                row.append(first[i].get("reference") or "–")
            for rows_of in by_index:
                ans = rows_of.get(i)
                if ans is None:
                    row.append("–")
                    continue
                text = ans.get("answer") or ""
                if not text.strip():  # nothing was cut: there is no text to continue
                    text, empty = EMPTY, True
                elif ans.get("finish_reason") == "length":
                    text += CUT
                    cut = True
                row.append(text)
            rows.append(row)
        headers = [gen["header"] for _, _, gen in cols]
        ways = Counter(decoding(h) for h in headers)
        if len(ways) == 1:
            notes = [f"Decoding: {next(iter(ways))}; each run's model answers the same prompts with its chat template."]
        else:
            notes = ["Decoding differs between columns: " + "; ".join(f"{lab}: {decoding(h)}" for lab, h in zip(labels, headers))
                     + "."]
        if cut:
            notes.append(f"{CUT.strip()}: the answer reached max_new_tokens before its end-of-turn token.")
        if empty:
            notes.append(f"{EMPTY}: the answer has no text (the model ended its turn at once, or wrote only special "
                         "tokens or whitespace).")
        title = f"Generations: {stem}" + (f" (prompts {digest[:8]})" if stems[stem] > 1 else "")
        data = {"prompts_sha256": digest, "runs": [str(r.path) for _, r, _ in cols],
                "settings": [h.get("settings") for h in headers]}
        tables.append(Table(title, header, rows, notes=notes, data=data, text=True))
    return tables
