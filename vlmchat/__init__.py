"""vlmchat: chat with, caption with and fine-tune open vision-language models on your own machine.

Importing the package is cheap: torch, transformers and gradio load only when a model or the UI
is used.
"""

from .errors import InputError, ModelLoadError, NoModelError, SettingsError, VlmchatError
from .settings import Settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "InputError", "ModelLoadError", "NoModelError", "SettingsError", "Settings", "VlmchatError",
    "load_settings", "__version__",
]
