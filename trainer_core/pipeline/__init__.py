"""The single-pair pipeline: `run.py` orchestrates one pair, `fit.py` fits one fold with Keras,
`walk_forward.py` scores earlier folds, `results.py` holds what reporters read."""

from .fit import (
    CHECKPOINT_FILE,
    EPOCHS_FILE,
    detect_gpus,
    device_report,
    fit_fold,
    prepare_fold,
    quiet_tensorflow,
    read_epochs,
)
from .results import Balance, Evaluation, PairResult, best_epoch, monitor_mode
from .run import (
    SPEC_FORMAT,
    check_components,
    load_pair_data,
    model_spec,
    required_validation_targets,
    resolve_tag,
    run_pair,
    time_breaks,
    versions,
)

__all__ = [
    "Balance",
    "CHECKPOINT_FILE",
    "EPOCHS_FILE",
    "Evaluation",
    "PairResult",
    "SPEC_FORMAT",
    "best_epoch",
    "check_components",
    "detect_gpus",
    "device_report",
    "fit_fold",
    "load_pair_data",
    "model_spec",
    "monitor_mode",
    "prepare_fold",
    "quiet_tensorflow",
    "read_epochs",
    "required_validation_targets",
    "resolve_tag",
    "run_pair",
    "time_breaks",
    "versions",
]
