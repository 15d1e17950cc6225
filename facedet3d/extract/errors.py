"""Extraction errors a user can act on (a picture without a face, ...)."""

from __future__ import annotations

from facedet3d.errors import UserError


class ExtractError(UserError):
    """Extraction could not process an image; the message says which and why."""


class NoFaceError(ExtractError):
    """The face detector found no face in the image."""
