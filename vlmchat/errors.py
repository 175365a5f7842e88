"""The one error hierarchy. A VlmchatError's message is shown to the user as is: it says what to do.

`Problem` is its counterpart for one row of a file (a dataset, an eval set) that cannot be used: the
rest of the file goes on, and the problem is reported as "file:line: why".
"""

from dataclasses import dataclass


class VlmchatError(Exception):
    """A problem the user can fix; the message names it and the fix."""


class SettingsError(VlmchatError):
    """settings.toml or a command-line flag holds a wrong key or value."""


class ModelLoadError(VlmchatError):
    """A model could not be found, downloaded or loaded."""


class InputError(VlmchatError):
    """A request's input (image, message, parameter) cannot be used."""


class FieldError(InputError):
    """One parameter's value cannot be used; `field` names it (the API answers with its own name for it)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class EndpointUnusable(InputError):
    """An endpoint that will refuse every request alike (not reached, key refused or missing, model unknown): a
    batch run stops at the first instead of sending, and failing, one request per picture."""


class EndpointTimeout(InputError):
    """An endpoint that did not answer in time (asked twice). Alone it may be one slow answer; when every request
    of a batch times out, the batch run stops as for EndpointUnusable (a hung server held an eval for hours)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """`exc`'s first non-empty line, cut at `limit`, or its type's name when it has no message (an empty message
    has no line 0: `str(exc).splitlines()[0]` raised IndexError inside the handler that was reporting it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__


def named(exc: BaseException) -> str:
    """'TypeName: first line', or the type's name alone when it has no message (MemoryError())."""
    return type(exc).__name__ + (f": {first_line(exc)}" if str(exc).strip() else "")


def all_lines(exc: BaseException, limit: int = 300) -> str:
    """`exc`'s message on one line, cut at `limit`: torch's "Error(s) in loading state_dict for PeftModel:" says what
    does not fit (which weight, which shapes) on the lines after it, and its first line alone says nothing."""
    return (" ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__)[:limit]


class ContextLengthError(InputError):
    """A conversation is longer than the model reads."""


class NoModelError(VlmchatError):
    """A request needs a loaded model and none is loaded."""


@dataclass(frozen=True)
class Problem:
    """Why one row or file cannot be used, shown as "file:line: why"."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}{f':{self.line}' if self.line else ''}: {self.message}"
