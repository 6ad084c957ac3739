"""What a pair's training produces (`Balance`, `Evaluation`, `PairResult`): defined on the contract
floor (`trainer_core.contract`), importable from here as before."""

from __future__ import annotations

from ..contract import (  # noqa: F401 (their old home)
    Balance,
    Evaluation,
    PairResult,
    best_epoch,
    best_index,
    is_better,
    monitor_mode,
)

__all__ = ["Balance", "Evaluation", "PairResult", "best_epoch", "best_index", "is_better", "monitor_mode"]
