"""pair-trainer's engine: the hook contract, plugin manager, manifest and single-pair pipeline.

Plugins import what they need from here: ``from trainer_core import hookimpl, PairData, Balance``.
"""

from .version import __version__

from .artifacts import ArtifactWriter  # noqa: E402
from .batch import BatchReport  # noqa: E402
from .batch import BatchReport  # noqa: E402
from .data import CLASS_NAMES, FEATURE_NAMES, NO_LABEL, PairData, file_sha256  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DataError,
    PluginError,
    PreemptedError,
    StorageError,
    TrainerError,
    TrainingError,
    reject_unknown,
)
from .hookspecs import hookimpl  # noqa: E402
from .inference import PairModel, load_pair_model  # noqa: E402
from .manifest import PairSpec  # noqa: E402
from .pipeline import Balance, Evaluation, PairResult, versions  # noqa: E402

__all__ = [
    "__version__",
    "hookimpl",
    "load_pair_model",
    "PairModel",
    "ArtifactWriter",
    "Balance",
    "BatchReport",
    "BatchReport",
    "CLASS_NAMES",
    "ConfigError",
    "DataError",
    "Evaluation",
    "FEATURE_NAMES",
    "NO_LABEL",
    "PairData",
    "PairResult",
    "PairSpec",
    "PluginError",
    "PreemptedError",
    "StorageError",
    "TrainerError",
    "TrainingError",
    "file_sha256",
    "reject_unknown",
    "versions",
]
