"""The one error hierarchy. A VlmchatError's message is shown to the user as is: it says what to do."""


class VlmchatError(Exception):
    """A problem the user can fix; the message names it and the fix."""


class SettingsError(VlmchatError):
    """settings.toml or a command-line flag holds a wrong key or value."""


class ModelLoadError(VlmchatError):
    """A model could not be found, downloaded or loaded."""


class InputError(VlmchatError):
    """A request's input (image, message, parameter) cannot be used."""


class NoModelError(VlmchatError):
    """A request needs a loaded model and none is loaded."""
