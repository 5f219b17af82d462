"""Worker for test_invariance.py: several `sftgo train` runs in turn in the same processes (under torchrun: one launch
for all of them, instead of one per run, whose start-up is most of a tiny run's time). Rank 0 writes
``<output_dir>.done`` after each run, so a test can wait for its own run while later ones go on.

    torchrun --nproc_per_node 2 tests/integration/train_worker.py JOBS.json   # [[output_dir, [train argv...]], ...]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    from sftgo import startup_gc
    from sftgo.cli import main, transformers_without

    startup_gc.pause()  # as the sftgo process itself starts: no garbage collection until the first run's first step
    transformers_without()  # and transformers without datasets and scipy
    import torch.distributed as dist

    for out, argv in json.loads(Path(sys.argv[1]).read_text()):
        rc = main(argv)
        if rc != 0:
            sys.exit(rc)
        if os.environ.get("RANK", "0") == "0":
            Path(out + ".done").write_text("")
    if dist.is_initialized():
        dist.destroy_process_group()
