"""Data: read examples, render prompts, tokenize with response-only labels, collate with per-token columns.

Formats (detected per record):
- Alpaca: ``{"instruction", "input" (optional), "output"}``
- chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`` (multi-turn, as in LIMA)
- prompt/completion: ``{"prompt", "completion"}``
- LIMA (GAIR/lima): ``{"conversations": [user, assistant, user, ...]}`` (strings, alternating, user first)
- question/answer: ``{"question", "answer"}`` with a string answer (GSM8K's train/test JSONL as they are)

Optional fields on any of these formats (JSON / JSONL / CSV / Parquet files, Hub and ``save_to_disk`` datasets):

- ``weight``: the example's weight (a finite number >= 0, default 1; 0 = not trained on);
- ``loss_weight`` on a chat message (assistant messages only): that message's weight, multiplied by the example's;
- ``channel`` (or the field named by ``--channel_field``): a string naming the example's source, for per-channel
  loss curves.

A token's weight is ``weight x loss_weight`` of the assistant message it belongs to; tokens of weight 0 are not
supervised at all (label -100). ``null`` / a missing value means "not set".

Every record is normalized to ``{"messages": [...]}`` (plus ``weight``, ``loss_weights`` and ``channel`` when set). Rendering uses the tokenizer's chat template when it has one,
else an Alpaca-style template. Labels are the assistant tokens only (``-100`` elsewhere): the response text and the
end-of-turn marker that follows it (so the model learns to stop). Supervised tokens are found by character offsets
into the rendered text, so the tokens are exactly those the model sees at inference (no per-segment tokenization).

In parts: :mod:`.readers` (files, the built-in data, Hub datasets; normalization and :class:`DataError`),
:mod:`.templates` (rendering and tokenization), :mod:`.cache` (the tokenized-data cache), :mod:`.channels` (channel
ids) and :mod:`.collation` (datasets, batch layouts, :class:`Collator`). Every name is importable from ``sftgo.data``
as before.
"""

from .cache import TOKENIZED_FORMAT_VERSION, tokenize_cached, tokenized_cache_dir, tokenizer_fingerprint
from .channels import OTHER_CHANNEL, add_channels, channel_tokens, channel_vocabulary, set_channel_column
from .collation import BATCH_LAYOUTS, MODEL_INPUT_KEYS, Collator, TokenDataset, model_inputs, pack_rows
from .readers import (DEFAULT_CHANNEL, DEFAULT_DATASET, HELDOUT_SPLITS, DataError, Examples, _read_records,
                      check_messages, choose_split, default_dataset_path, load_examples)
from .templates import (ALPACA_TEMPLATE_SYSTEM, ALPACA_TEMPLATE_USER, IGNORE_INDEX, TokenizedData, render,
                        tokenize_examples)
