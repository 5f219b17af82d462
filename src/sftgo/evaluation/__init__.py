"""``sftgo eval``: the paper's benchmarks through lm-evaluation-harness (offline with local files), held-out group
losses, and the base model's numbers beside the run's. ``tasks`` (suites, local-file converters, the generated task
folder), ``run`` (the command, result files, base cache), ``heldout`` (group losses through the per-token head).
Needs the ``eval`` extra: ``pip install 'sftgo[eval]'``."""
