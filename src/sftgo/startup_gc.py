"""The garbage collector paused while a ``sftgo train`` process starts, and its start-up frozen when training begins.

Importing torch, transformers and the Trainer leaves ~400,000 Python objects that live until the process ends, and
CPython runs a full collection (a pass over every tracked object) each time that long-lived heap grows by a quarter:
six full passes during `sftgo train`'s imports alone, plus accelerate's explicit ``gc.collect()`` when training ends
— about 0.7 s of the ~6 s of CPU a small run's process spends (benchmarks/bench_startup_gc.py). The six start-up
passes find almost nothing (174 unreachable objects in all, on the tiny run of the benchmark): what start-up creates
is the program itself (modules, classes, the model, the tokenized data).

So the sftgo process (the console script / ``python -m sftgo.cli``; never an in-process ``sftgo.cli.main(argv)`` of
a user's program) pauses the collector when it starts a training run, and when its start-up is over (model loaded,
data tokenized, right before the first step) moves every object alive into the permanent generation
(``gc.freeze``) and resumes it: later collections scan only what training allocates. Reference counting frees objects
as usual throughout; only unreachable reference cycles made during start-up stay (those few hundred objects), and a
process that stops before training (an error, ``--help``) simply ends."""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """Stop automatic collection until :func:`resume` (only if it was on: a caller's own choice is left alone)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """After :func:`pause`: freeze what start-up made into the permanent generation and collect automatically again.
    A no-op otherwise (an in-process run, or a second call)."""
    global _paused
    if _paused:
        gc.freeze()
        gc.enable()
        _paused = False
