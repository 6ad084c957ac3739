"""`trainer tune`: a per-pair hyperparameter search, nested in purged folds, that proves it helped.

`settings` reads the manifest's `tune:` section, `folds` lays out the nested purged folds, `trial`
runs one trial or outer fit in a Ray worker, `driver` schedules every pair's study on the cluster,
`stats` holds the paired interval, DSR and PBO, and `report` writes what a search leaves behind.
"""

from .driver import TuneInterrupted, TuneRun, read_tune_manifest
from .settings import OBJECTIVES, TuneSettings, check_tune, split_manifest

__all__ = [
    "OBJECTIVES",
    "TuneInterrupted",
    "TuneRun",
    "TuneSettings",
    "check_tune",
    "read_tune_manifest",
    "split_manifest",
]
