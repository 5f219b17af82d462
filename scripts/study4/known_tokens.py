"""CPU study 4: the scorer that knows the important tokens of the synthetic set (scripts/study4/prep.py): every
name and code token has an id >= KNOWN_FIRST_ID (1000) under the set's word-level tokenizer, and no other token
does. Score 1 for those tokens, 0 for the rest (known; known_spans for any tokenizer, by the text); a
``module:function`` scorer for ``sftgo score --truth`` and
``sftgo eval --heldout --scorer`` (put this folder on PYTHONPATH: ``--scorer known_tokens:known``)."""

import re

import numpy as np

KNOWN_FIRST_ID = 1000


def known(token_ids, **_):
    return [(np.asarray(ids) >= KNOWN_FIRST_ID).astype(np.float32) for ids in token_ids]


# Under another tokenizer (SmolLM2's byte-level BPE, for the LoRA runs) a name or a code is several subword tokens,
# and the ids say nothing. known_spans marks every supervised token whose characters overlap a name or a code in the
# answer text: the names are the set's one-word CamelCase names (two capitals, e.g. AdaVarn), the codes its 4-digit
# numbers; no filler word of the templates matches either pattern.
SPAN = re.compile(r"\b[A-Z][a-z]+[A-Z][a-z]+\b|\b\d{4}\b")


def known_spans(token_ids, *, texts, offsets, **_):
    out = []
    for ids, text, offs in zip(token_ids, texts, offsets):
        spans = [m.span() for m in SPAN.finditer(text)]
        offs = np.asarray(offs).reshape(-1, 2)
        mark = np.zeros(len(ids), dtype=np.float32)
        for a, b in spans:
            mark[(offs[:, 0] < b) & (offs[:, 1] > a)] = 1.0
        out.append(mark)
    return out
