"""User-facing errors.

Every problem caused by the user's input (an unknown name, missing data, an impossible IPC, a
corrupt or foreign file) is raised as a :class:`DsdistillError` subclass with one sentence that
names the problem and the fix. The CLI prints that sentence and exits with code 2, no traceback.
"""


class DsdistillError(Exception):
    """Base class of every error the toolkit reports to users as one clear line."""

    exit_code = 2


class UnknownNameError(DsdistillError, KeyError):
    """A method, dataset, model or protocol name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(DsdistillError, FileNotFoundError):
    """Dataset files are missing under the data root."""


class ConfigError(DsdistillError, ValueError):
    """An invalid setting (bad IPC, unknown config key, wrong type)."""


class SyntheticFileError(DsdistillError, ValueError):
    """An HDF5 file that is truncated, foreign, inconsistent or of an unknown major version."""


class NumericalError(DsdistillError, RuntimeError):
    """A run diverged (NaN/Inf) repeatedly even after rolling back."""
