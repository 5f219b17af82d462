"""Bundled recipes: the YAML files of ``configs/`` (in a checkout a link to ``src/sftgo/resources/recipes/``), shipped
in the wheel and found by name, so ``sftgo train paper/llama32_3b_alpaca_tfidf`` and ``sftgo train demo`` work
wherever sftgo is installed. A path that exists always wins over a recipe name; ``configs/NAME.yaml`` (the form the
README uses in a checkout) falls back to the recipe NAME where no such file exists.

``sftgo recipes`` lists them with one line each; ``sftgo recipes copy NAME [DEST]`` writes one out to edit;
``sftgo recipes path NAME`` prints where one is installed (for ``accelerate launch --config_file``).
"""

from __future__ import annotations

import difflib
import logging
import shutil
import sys
from pathlib import Path

from .errors import UserError

logger = logging.getLogger(__name__)

RECIPE_DIR = Path(__file__).resolve().parent / "resources" / "recipes"
SUFFIXES = (".yaml", ".yml")
KINDS = {"train": "train configs (sftgo train NAME [--flag value ...])",
         "sweep": "sweep files (sftgo sweep NAME)",
         "accelerate": "multi-GPU launch configs (accelerate launch --config_file $(sftgo recipes path NAME) "
                       "-m sftgo.cli train ...)"}


class RecipeError(UserError):
    """An unknown recipe name, or a copy that would overwrite a file."""


def recipe_names() -> list[str]:
    """Every bundled recipe, as the name it is called by (``paper/llama32_3b_alpaca_tfidf``), sorted."""
    return sorted(p.relative_to(RECIPE_DIR).with_suffix("").as_posix()
                  for p in RECIPE_DIR.rglob("*") if p.suffix in SUFFIXES and p.is_file())


def recipe_kind(name: str) -> str:
    parts = name.split("/")
    return "accelerate" if parts[0] == "accelerate" else "sweep" if "sweeps" in parts[:-1] else "train"


def recipe_path(name: str) -> Path | None:
    """The bundled file of a recipe name (``demo``, ``paper/x``, ``paper/x.yaml``, ``configs/paper/x.yaml``), or None."""
    key = recipe_key(name)
    if not key or key.startswith("/") or ".." in key.split("/"):
        return None
    for suffix in SUFFIXES:
        p = RECIPE_DIR / (key + suffix)
        if p.is_file():
            return p
    return None


def resolve_recipe(name_or_path: str | Path, error: type[ValueError] = RecipeError, what: str = "config file") -> Path:
    """An existing path as it is; else the bundled recipe of that name; else ``error`` in one line with the closest
    recipe names and how to list them."""
    given = Path(name_or_path)
    if given.exists() and not given.is_dir():  # a file (or a pipe: <(...)) keeps priority over a recipe name
        return given
    bundled = recipe_path(str(name_or_path))
    if bundled is not None:
        logger.info("%s: the bundled recipe %s", name_or_path, bundled)
        return bundled
    if given.is_dir():
        raise error(f"{what} {name_or_path} is a folder, not a YAML file (`sftgo recipes` lists the bundled recipes)")
    raise error(unknown_recipe_message(str(name_or_path), what))


def recipe_key(name: str) -> str:
    """A recipe name as given (``./configs/paper/x.yaml``) -> the name it is listed by (``paper/x``)."""
    key = name.strip().replace("\\", "/").removeprefix("./").removeprefix("configs/")
    for suffix in SUFFIXES:
        key = key.removesuffix(suffix)
    return key


def unknown_recipe_message(name: str, what: str = "config file") -> str:
    key = recipe_key(name)
    names = recipe_names()
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    if not close:  # a bare file name of a recipe in a folder: llama32_3b_alpaca_tfidf -> paper/llama32_3b_alpaca_tfidf
        close = difflib.get_close_matches(key.rsplit("/", 1)[-1], names, n=3, cutoff=0.0)
        close = [n for n in close if difflib.SequenceMatcher(None, key, n.rsplit("/", 1)[-1]).ratio() >= 0.6]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{what} {name} does not exist and is not a bundled recipe{hint} (`sftgo recipes` lists them)"


def description(path: Path, width: int = 80) -> str:
    """The first sentence of the comment a recipe opens with (each says what it is), cut to ``width`` characters."""
    import re

    head = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        head.append(line.lstrip("#").strip())
    text = " ".join(head)
    text = re.split(r"(?<=[.!?])\s+(?=[A-Z(`])", text, maxsplit=1)[0]
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def list_recipes(out=None) -> None:
    out = out or sys.stdout
    names = recipe_names()
    width = max(map(len, names), default=0)
    for kind, title in KINDS.items():
        mine = [n for n in names if recipe_kind(n) == kind]
        if not mine:
            continue
        print(f"{title}:", file=out)
        for n in mine:
            print(f"  {n:<{width}}  {description(recipe_path(n))}".rstrip(), file=out)
    print("\nCopy one to edit: sftgo recipes copy NAME [DEST]   (a path you give always wins over a recipe name)",
          file=out)


def copy_recipe(name: str, dest: str | None = None) -> Path:
    """Write the bundled recipe ``name`` to ``dest`` (default: ./<its file name>; a folder: into it); never overwrites."""
    src = recipe_path(name)
    if src is None:
        raise RecipeError(unknown_recipe_message(name, "recipe"))
    target = Path(dest) if dest else Path(src.name)
    if target.is_dir():
        target = target / src.name
    if target.exists():
        raise RecipeError(f"{target} already exists; pass another DEST (sftgo recipes copy {name} DEST) or remove it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, target)
    return target


def main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="sftgo recipes", allow_abbrev=False,
                                description="The recipes that ship with sftgo: list them (no arguments), copy one to "
                                            "edit, or print where one is installed.")
    sub = p.add_subparsers(dest="action")
    c = sub.add_parser("copy", help="write a recipe to DEST (default: ./NAME.yaml) to edit it", allow_abbrev=False)
    c.add_argument("name")
    c.add_argument("dest", nargs="?")
    w = sub.add_parser("path", help="print the installed file of a recipe", allow_abbrev=False)
    w.add_argument("name")
    a = p.parse_args(argv)
    if a.action == "copy":
        target = copy_recipe(a.name, a.dest)
        cmd = {"sweep": "sftgo sweep", "train": "sftgo train"}.get(recipe_kind(a.name), "accelerate launch --config_file")
        print(f"wrote {target}; edit it, then: {cmd} {target}")
    elif a.action == "path":
        src = recipe_path(a.name)
        if src is None:
            raise RecipeError(unknown_recipe_message(a.name, "recipe"))
        print(src)
    else:
        list_recipes()
    return 0
