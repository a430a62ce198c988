"""Errors that the CLI reports as one line (problem and fix) instead of a traceback."""

from __future__ import annotations

from rlhf.core.config import ConfigError

__all__ = ["USER_ERRORS", "ConfigError", "UserError"]


class UserError(RuntimeError):
    """Bad input or environment that the user can fix; the message names the problem and the fix."""


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, ConfigError, FileNotFoundError)
