"""pair-trainer's engine: the hook contract, plugin manager, manifest and single-pair pipeline.

Plugins import what they need from here, and only from here (a test checks the built-ins do):
``from trainer_core import hookimpl, PairData, Balance``.
"""

from .artifacts import ArtifactWriter  # noqa: E402
from .batch import BatchReport  # noqa: E402
from .candles import (  # noqa: E402
    Candles,
    candle_files,
    candle_fingerprint,
    check_candles,
    iso_time,
    parse_candle_name,
    read_candles,
    rows_fingerprint,
    timeframe_ms,
)
from .commands import (
    command_manifest,
    command_plugins,
    debug_option,
    manifest_option,
    no_manifest_plugins_option,
    set_option,
)
from .contract import BatchEvent, BatchRow, figure_of, sort_rows  # noqa: E402
from .data import CLASS_NAMES, NO_LABEL, PairData, file_sha256  # noqa: E402
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
from .features import pair_data_from_candles, resolve_spec  # noqa: E402
from .formats import read_table
from .hookspecs import hookimpl  # noqa: E402
from .inference import (  # noqa: E402
    PairModel,
    load_pair_model,
    predict_latest_many,
    read_for_prediction,
    select_time,
)
from .lifecycle import (  # noqa: E402
    ConflictError,
    ExpiredModelError,
    LifecycleError,
    ModelStore,
    expired,
    find_stores,
    read_policy,
    resolve_model,
    split_selector,
    write_policy,
)
from .locks import PairLock  # noqa: E402
from .manifest import (  # noqa: E402
    PairSpec,
    check_values,
    integer_check,
    load_manifest,
    manifest_from_dict,
    normalize_pair,
    number_check,
    plain,
    probabilities_check,
    string_check,
)
from .pipeline import Balance, Evaluation, PairResult, versions  # noqa: E402
from .tune import TuneInterrupted, TuneRun  # noqa: E402
from .version import __version__

__all__ = [
    "__version__",
    "hookimpl",
    "load_pair_model",
    "PairModel",
    "predict_latest_many",
    "ArtifactWriter",
    "Balance",
    "BatchEvent",
    "BatchReport",
    "BatchRow",
    "figure_of",
    "sort_rows",
    "CLASS_NAMES",
    "ConfigError",
    "DataError",
    "Evaluation",
    "FEATURE_NAMES",
    "NO_LABEL",
    "PairData",
    "PairLock",
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
    # candles and the seed's training-ready files, for loaders and commands
    "Candles",
    "candle_files",
    "candle_fingerprint",
    "check_candles",
    "iso_time",
    "load_manifest",
    "normalize_pair",
    "pair_data_from_candles",
    "parse_candle_name",
    "read_candles",
    "read_table",
    "rows_fingerprint",
    "timeframe_ms",
    # what a plugin command shares with the built-in ones (`trainer prepare`)
    "command_manifest",
    "command_plugins",
    "debug_option",
    "manifest_option",
    "set_option",
    "no_manifest_plugins_option",
    "resolve_spec",
    # scoring predictions (`trainer evaluate`)
    "manifest_from_dict",
    "check_values",
    "integer_check",
    "number_check",
    "plain",
    "probabilities_check",
    "string_check",
    "read_for_prediction",
    "select_time",
    # what `trainer validate` checks, for commands that write a manifest elsewhere (trainer k8s render)
    "validate_components",
    # the search behind `trainer tune`
    "TuneInterrupted",
    "TuneRun",
    # model versions, aliases and their event log
    "ConflictError",
    "ExpiredModelError",
    "LifecycleError",
    "ModelStore",
    "expired",
    "find_stores",
    "read_policy",
    "resolve_model",
    "split_selector",
    "write_policy",
]


def validate_components(manifest, specs, *, manifest_plugins: bool | None = None) -> None:
    """What `trainer validate` checks beyond the settings: every component each of ``specs`` (the
    manifest's resolved pairs) names is registered, with valid params. Loads the plugins as the
    commands do (``manifest_plugins=False``: refuse the manifest's own `plugins:` modules); raises
    the same `PluginError` or `ConfigError`."""
    from .pipeline import check_components
    from .plugins import Plugins

    plugins = Plugins.load(manifest.plugins, manifest_plugins=manifest_plugins)
    for spec in specs:
        check_components(spec, plugins)


def __getattr__(name: str):
    """``FEATURE_NAMES``: the default feature set's columns, asked of its plugin on first use."""
    if name == "FEATURE_NAMES":
        from .data import default_feature_names

        return default_feature_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
