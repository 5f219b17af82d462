"""Shared offline fixtures: a tiny byte-level BPE tokenizer (with and without a chat template), a tiny Llama model
built from config, and small datasets. Nothing here touches the network."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# ----------------------------------------------------------------------------------- running on both cores (xdist)
# `make test` runs `pytest -n 2 --dist loadgroup`: two worker processes take tests from one queue, except groups,
# which run whole on one worker, one test after the other:
# - `serial`: tests that start several processes or rely on real signals or a real cluster (mark them
#   `@pytest.mark.serial`; `slurm` tests are put there too). They never run beside each other, only beside one
#   ordinary test, so a 2-process torchrun job has its own core and a kill lands where the test waits for it.
# - a module whose tests share a module-scoped fixture (a trained run, a converted model) runs on one worker, so the
#   fixture is built once, not once per worker (the tests of such a module may also build on each other's files).
# Each worker then uses one thread (two workers on two cores: more would oversubscribe them); subprocesses inherit it.
SERIAL_MARKS = ("serial", "slurm")
# A test whose own code launches processes or sends signals this way is taken as marked `serial` (a safety net).
SERIAL_SOURCE = ('/ "torchrun"', 'which("torchrun")', "torch.distributed.run", "mp.spawn(", "send_signal(", "os.kill(",
                 "os.killpg(", "signal.SIGINT", "signal.SIGTERM", '"sbatch"')

if os.environ.get("PYTEST_XDIST_WORKER") and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


FIRST = ("test_pip_install",)  # modules run before all others (see pytest_collection_modifyitems)


def xdist_group_of(item) -> str | None:
    """The xdist group a test runs in: "serial", its module's name (a module-scoped fixture), or None (any worker)."""
    import inspect

    if any(item.get_closest_marker(m) for m in SERIAL_MARKS):
        return "serial"
    try:
        src = inspect.getsource(item.function)
    except (AttributeError, OSError, TypeError):
        src = ""
    if any(s in src for s in SERIAL_SOURCE):
        return "serial"
    info = getattr(item, "_fixtureinfo", None)
    defs = [d for ds in (info.name2fixturedefs.values() if info else ()) for d in ds]
    if any(d.scope in ("module", "class") and d.baseid for d in defs):  # baseid "": a plugin's fixture
        return item.module.__name__
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    # The longest single test (a fresh venv from the built wheel, ~3 min, CI only) is handed out first: started late it
    # would run alone at the end while the other worker waits.
    items.sort(key=lambda item: item.module.__name__.rpartition(".")[2] not in FIRST)
    for item in items:
        group = xdist_group_of(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reports the ids to the scheduler
def pytest_collection_finish(session):
    """xdist 3.8 groups by a ``@group`` suffix it writes into ``item._nodeid``, which pytest 9.2 no longer reads (the
    groups were silently ignored): where the suffix did not take, put it into the id the worker reports."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    for item in session.items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid and hasattr(item, "_id"):
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """After each test (its fixtures' teardown included): collect the garbage it left, then freeze what is still alive
    (imported modules, caches, longer-lived fixtures) out of the collector's way, as `sftgo train` does for its own
    start-up (sftgo.startup_gc). A test process holds ~500,000 such objects once torch, transformers and sftgo are
    imported, and every full collection passed over all of them again: CPython's own as the heap grows, and
    accelerate's ``gc.collect()`` at the end of every in-process training run (63 passes, 13.9 of test_train.py's
    34 s of CPU; with this, 1.1 of 23 s). Objects frozen are still freed when nothing refers to them; a frozen
    reference cycle that becomes garbage later stays until the process ends (fixtures hold paths and tiny models)."""
    yield
    import gc

    gc.collect()
    gc.freeze()


CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Add three and four. Three plus four equals seven.",
    "Write a short poem about the sea. Waves roll in, the gulls cry out, the tide goes back again.",
    "Sort these numbers: 5, 2, 9. The sorted list is 2, 5, 9.",
    "Explain photosynthesis. Plants use sunlight, water and carbon dioxide to make sugar and oxygen.",
    "Instruction Response Input ### : user assistant system",
] * 4


def build_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|pad|>", "<|im_start|>", "<|im_end|>", "</s>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    kw = dict(tokenizer_object=tok, pad_token="<|pad|>")
    if chat:
        return PreTrainedTokenizerFast(**kw, eos_token="<|im_end|>", chat_template=CHAT_TEMPLATE,
                                       additional_special_tokens=["<|im_start|>"])
    return PreTrainedTokenizerFast(**kw, eos_token="</s>")


@pytest.fixture(scope="session")
def chat_tokenizer():
    return build_tokenizer(chat=True)


@pytest.fixture(scope="session")
def plain_tokenizer():
    return build_tokenizer(chat=False)


def build_tiny_model(vocab_size: int, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, pad_token_id=0)
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, chat_tokenizer):
    """A tiny Llama + the chat tokenizer saved as a local model folder (what --model_name_or_path takes)."""
    d = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model(len(chat_tokenizer)).save_pretrained(d)
    chat_tokenizer.save_pretrained(d)
    return str(d)


EXAMPLES = [
    {"instruction": "Add three and four.", "input": "", "output": "Three plus four equals seven."},
    {"instruction": "What is the capital of France?", "input": "", "output": "The capital of France is Paris."},
    {"instruction": "Sort these numbers.", "input": "5, 2, 9", "output": "The sorted list is 2, 5, 9."},
    {"instruction": "Explain photosynthesis.", "input": "",
     "output": "Plants use sunlight, water and carbon dioxide to make sugar and oxygen."},
]


@pytest.fixture()
def alpaca_file(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in EXAMPLES))
    return str(p)
