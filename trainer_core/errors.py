"""The project's exceptions: every expected failure is a `TrainerError` with a message and a hint."""

from __future__ import annotations


class TrainerError(Exception):
    """An expected failure: the CLI prints the message and the hint, no traceback.

    `exit_code` follows the CLI contract: 2 for usage, configuration and data-contract
    errors (the user must change something), 1 for a training run that failed.
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(TrainerError):
    """A manifest, flag or `--set` value that is wrong."""

    exit_code = 2


class DataError(TrainerError):
    """Input data that breaks the data contract (missing file, bad columns, NaN, order...)."""

    exit_code = 2


class PluginError(TrainerError):
    """A plugin that cannot be loaded, a duplicate component name, or an unknown one."""

    exit_code = 2


class TrainingError(TrainerError):
    """Training started but did not finish (out of memory, a model that cannot be built...)."""

    exit_code = 1


class StorageError(TrainerError):
    """The output location cannot be written."""

    exit_code = 1


class PreemptedError(TrainerError):
    """SIGTERM arrived while training (a pod evicted or preempted): the run stopped at the end of
    its current step and kept its backup, so running it again resumes it.

    Exit code 143 (128 + SIGTERM), the code the Kubernetes Job's ``podFailurePolicy`` retries.
    """

    exit_code = 143


def reject_unknown(params, known, setting: str, owner: str) -> None:
    """A component's params may hold only the keys it knows: name the first stranger and the known.

    ``reject_unknown(params, ("units",), "model.params", "the tiny-gru builder")``
    """
    unknown = sorted(set(params) - set(known))
    if unknown:
        listing = f"Known: {', '.join(known)}." if known else "It takes none."
        raise ConfigError(
            f"Unknown setting {setting}.{unknown[0]} for {owner}. {listing}",
            f"Remove it, or see docs/manifest.md for {setting}.",
        )
