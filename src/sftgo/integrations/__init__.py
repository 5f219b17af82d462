"""Adapters that run sftgo's objectives inside other trainers. ``sftgo.integrations.trl``: ``SFTGoSFTConfig`` and
``SFTGoSFTTrainer`` over TRL's ``SFTTrainer`` (needs ``pip install 'sftgo[trl]'``; imported on use, not here)."""
