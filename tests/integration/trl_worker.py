"""Worker for test_trl.py: one SFTGoSFTTrainer run (in-process, or under torchrun with 2 CPU processes and gloo) on the
tiny model and a prompt-completion dataset; rank 0 writes its log history (``log.json``) and final weights.

    torchrun --nproc_per_node 2 tests/integration/trl_worker.py OUT_DIR DATA.jsonl MICRO ACCUM JSON_SETTINGS
    torchrun --nproc_per_node 2 tests/integration/trl_worker.py JOBS.json   # [[OUT_DIR, DATA, MICRO, ACCUM, {...}], ...]

With a JOBS.json the runs go one after the other in the same processes (one launch); rank 0 writes ``OUT_DIR.done``
after each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def conversational(examples):
    """Alpaca-style rows as TRL's conversational prompt-completion format."""
    return [{"prompt": [{"role": "user", "content": e["instruction"] + (" " + e["input"] if e["input"] else "")}],
             "completion": [{"role": "assistant", "content": e["output"]}]} for e in examples]


def common_args(out_dir, **over):
    """Settings shared by every TRL run in the tests: fp32 on CPU (TRL defaults to bf16 autocast and gradient
    checkpointing), one log per step, nothing saved during training."""
    kw = dict(output_dir=str(out_dir), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3, report_to="none",
              use_cpu=True, logging_steps=1, save_strategy="no", max_length=48, bf16=False,
              gradient_checkpointing=False, disable_tqdm=True, seed=0, dataloader_num_workers=0)
    kw.update(over)
    return kw


def run(out_dir, data_path, micro, accum, settings, world_size=1):
    import datasets

    from sftgo.integrations.trl import SFTGoSFTConfig, SFTGoSFTTrainer
    from tests.conftest import build_tiny_model, build_tokenizer

    tok = build_tokenizer(chat=True)
    rows = [json.loads(line) for line in Path(data_path).read_text().splitlines()]
    ds = datasets.Dataset.from_list(conversational(rows))
    extra = {"ddp_backend": "gloo"} if world_size > 1 else {}
    args = SFTGoSFTConfig(**common_args(out_dir, per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
                                        **extra, **settings))
    trainer = SFTGoSFTTrainer(build_tiny_model(len(tok), seed=0), args=args, train_dataset=ds, processing_class=tok)
    trainer.train()
    if trainer.is_world_process_zero():
        Path(out_dir, "log.json").write_text(json.dumps(trainer.state.log_history))
        trainer.save_model(str(Path(out_dir, "final")))


if __name__ == "__main__":
    import torch.distributed as dist

    sys.path.insert(0, str(ROOT))
    if len(sys.argv) == 2:
        for out, data, micro, accum, settings in json.loads(Path(sys.argv[1]).read_text()):
            run(out, data, micro, accum, settings, world_size=2)
            if dist.get_rank() == 0:
                Path(out + ".done").write_text("")
    else:
        out, data, micro, accum, settings = sys.argv[1:6]
        run(out, data, int(micro), int(accum), json.loads(settings), world_size=2)
    if dist.is_initialized():
        dist.destroy_process_group()
