"""Every launch config in configs/accelerate/ goes through accelerate's own `accelerate launch` parsing and the
environment its launcher would set, and the FSDP / DeepSpeed plugin is built from that environment (as each process
builds it at start). No GPU needed: the launcher is never run."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from sftgo.recipes import RECIPE_DIR

CONFIG_DIR = RECIPE_DIR / "accelerate"  # configs/accelerate/ in a checkout
EXPECTED = {"single_gpu.yaml", "ddp.yaml", "fsdp.yaml", "zero2.yaml", "zero3.yaml"}


def _launch_env(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env, prepare_simple_launcher_cmd_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "sftgo.cli", "train"])
    args, defaults, _ = _validate_launch_command(args)
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command does
        return args, prepare_deepspeed_cmd_env(args)[1]
    if args.use_fsdp or args.multi_gpu:
        return args, prepare_multi_gpu_env(args)
    return args, prepare_simple_launcher_cmd_env(args)[1]


def test_the_five_settings_are_shipped():
    assert {p.name for p in CONFIG_DIR.glob("*.yaml")} == EXPECTED


def test_single_gpu_and_ddp():
    args, _ = _launch_env(CONFIG_DIR / "single_gpu.yaml")
    assert not (args.multi_gpu or args.use_fsdp or args.use_deepspeed) and args.num_processes == 1
    args, env = _launch_env(CONFIG_DIR / "ddp.yaml")
    assert args.multi_gpu and not (args.use_fsdp or args.use_deepspeed) and args.num_processes > 1
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_fsdp_full_shard_keeps_the_lm_head_in_the_root_unit():
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    args, env = _launch_env(CONFIG_DIR / "fsdp.yaml")
    assert args.use_fsdp
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # full shard
    # Only transformer blocks (the model's _no_split_modules) are wrapped: the LM head stays in the root unit, which
    # FSDP keeps unsharded from forward to backward, so the per-token head sees its full weight.
    assert plugin.auto_wrap_policy is transformer_auto_wrap_policy and plugin.transformer_cls_names_to_wrap is None
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # final/ loadable with from_pretrained


@pytest.mark.parametrize("name,stage", [("zero2.yaml", 2), ("zero3.yaml", 3)])
def test_deepspeed_zero(name, stage):
    from accelerate.utils import DeepSpeedPlugin

    args, env = _launch_env(CONFIG_DIR / name)
    assert args.use_deepspeed
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    zero = plugin.deepspeed_config["zero_optimization"]
    assert plugin.zero_stage == zero["stage"] == stage
    assert zero["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)  # ZeRO-3: final/ gets full weights
