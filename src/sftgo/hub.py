"""Hub downloads that cannot happen fail at once, in one line naming the flag and the local alternative.

Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable), transformers and datasets retry the Hub for about a minute and
end in a traceback. Before a model or dataset is fetched by Hub id, :func:`require_hub` checks that it can be: it is in
the local Hugging Face cache, or the Hub answers (one request, a few seconds at most, made once per process). Online
nothing changes; a cached copy is read offline (``local_files_only``, see :func:`offline_kwargs`).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

from .errors import UserError

PROBE_TIMEOUT_S = 5.0
DEFAULT_MODEL = "smollm2-135m-instruct"
"""Name of the built-in default model (sftgo.models resolves it to its converted local folder): never a Hub id."""
_TRUE = {"1", "true", "yes", "on"}


class HubUnavailableError(UserError):
    """A Hub id given where the Hub cannot be reached; the message names the flag and the local alternative."""


def looks_like_hub_id(name: str | None) -> bool:
    """A name that is neither an existing path nor path-like: ``name`` or ``org/name``."""
    if not name or name in (DEFAULT_MODEL, "initial"):  # the built-in model; the reference 'initial' (the model itself)
        return False
    name = str(name)
    return not (Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
                or name.endswith((".json", ".jsonl", ".csv", ".parquet")) or ":" in name)


def offline_flag() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, now or when huggingface_hub was imported."""
    if (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower() in _TRUE:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    """None when the Hub endpoint answers (any HTTP status), else why not. One request, in a thread so that a hanging
    name lookup cannot hold the command longer than PROBE_TIMEOUT_S; proxies from the environment are honoured."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    url = constants.ENDPOINT
    result = []

    def go():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S)
            result.append(None)
        except urllib.error.HTTPError:
            result.append(None)  # it answered
        except Exception as e:  # URLError, timeout, OSError: no answer
            result.append(f"{url} cannot be reached ({getattr(e, 'reason', e)})")

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(PROBE_TIMEOUT_S + 1)
    return result[0] if result else f"{url} did not answer within {PROBE_TIMEOUT_S:g} s"


def hub_unavailable() -> str | None:
    """Why nothing can be downloaded from the Hub now, or None when it can."""
    if offline_flag():
        return "HF_HUB_OFFLINE is set"
    return _probe()


def in_local_cache(repo_id: str, repo_type: str = "model") -> bool:
    """A copy of ``repo_id`` in the Hugging Face cache (hub snapshots; for datasets also ``datasets``' own cache)."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    if snapshots.is_dir() and any(snapshots.iterdir()):
        return True
    if repo_type == "dataset":
        try:
            import datasets

            return (Path(datasets.config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")).is_dir()
        except Exception:  # datasets missing or its cache unreadable: no copy we know of
            return False
    return False


def require_hub(name: str | None, flag: str, repo_type: str = "model", *, what: str | None = None,
                fix: str | None = None, error: type[UserError] = HubUnavailableError) -> None:
    """Nothing when ``name`` is local, cached or downloadable; else ``error``: could not load ``what`` (default "the
    Hub model" / "the Hub dataset"), why, and ``fix`` (default: pass ``flag`` with a local folder / file)."""
    if not looks_like_hub_id(name) or in_local_cache(str(name), repo_type):
        return
    reason = hub_unavailable()
    if reason is None:
        return
    if fix is None:
        fix = (f"pass {flag + ' LOCAL_DIR, ' if flag else ''}a local folder with the model (written by save_pretrained)"
               if repo_type == "model" else
               f"pass {flag + ' FILE, ' if flag else ''}a local .json/.jsonl/.csv/.parquet file (or a save_to_disk folder)")
    raise error(f"could not load {what or 'the Hub ' + repo_type} {name!r} ({reason}, and it is not in the local Hugging "
                f"Face cache): {fix}")


def offline_kwargs(name: str | None) -> dict:
    """``from_pretrained`` keyword arguments: ``local_files_only`` when the Hub cannot be reached (a cached copy is then
    read at once instead of after a minute of retries)."""
    return {"local_files_only": True} if looks_like_hub_id(name) and hub_unavailable() else {}


def check_sources(*, model=None, datasets=(), reference=None, scorer_models=()) -> None:
    """Every Hub id a command would download, checked before anything is loaded or written: the model, ``datasets``
    as ``(flag, value)`` pairs, the reference model (where used; None otherwise) and the scorers' models
    (``(flag, value, what)``: :meth:`sftgo.scorers.Scorer.hub_models`, e.g. the LLMLingua-2 encoder).
    Local paths, the built-in model and data pass (:func:`looks_like_hub_id`)."""
    require_hub(model, "--model_name_or_path")
    for flag, value in datasets:
        require_hub(value, flag, "dataset")
    require_hub(reference, "--ref_model_name_or_path")
    for flag, value, what in scorer_models:
        require_hub(value, flag, what=what)
