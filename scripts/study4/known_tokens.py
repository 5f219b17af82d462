"""CPU study 4: the scorer that knows the important tokens of the synthetic set (scripts/study4/prep.py): every
name and code token has an id >= KNOWN_FIRST_ID (1000) under the set's word-level tokenizer, and no other token
does. Score 1 for those tokens, 0 for the rest; a ``module:function`` scorer for ``sftgo score --truth`` and
``sftgo eval --heldout --scorer`` (put this folder on PYTHONPATH: ``--scorer known_tokens:known``)."""

import numpy as np

KNOWN_FIRST_ID = 1000


def known(token_ids, **_):
    return [(np.asarray(ids) >= KNOWN_FIRST_ID).astype(np.float32) for ids in token_ids]
