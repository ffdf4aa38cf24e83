"""One error hierarchy for every mistake a user can make: the CLI prints it as one line, the UI as st.error."""

from __future__ import annotations


class SqueezeError(Exception):
    """A failure caused by the user's input, told in one line that names the input and the reason."""

    def __init__(self, reason: str, source: str | None = None, details: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source
        self.details = details  # the underlying message in full (ONNX Runtime's), for --verbose and "details"

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}" if self.source else self.reason


class ModelLoadError(SqueezeError):
    """The model could not be read: missing, unreadable, corrupt, or not a model at all."""


class UnsupportedModelError(SqueezeError):
    """The model is valid but this tool cannot work with it (yet)."""


class InvalidSettingError(SqueezeError, ValueError):
    """A setting is out of range or unknown."""
