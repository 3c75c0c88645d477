"""The user-error base class: problems the user fixes (a recipe key, a data row, a file), not bugs.

The ``prefopt`` command prints any :class:`UserError` as one message, without a traceback, and
exits with its :attr:`~UserError.exit_status` (``--debug`` shows the traceback). Subclasses say
where the problem is: :class:`prefopt.config.RecipeError` (the file and key, status 2),
:class:`prefopt.data.DataValidationError` and :class:`prefopt.data.DataSourceError` (the file,
row and field, status 1), :class:`prefopt.data.tokenize.TemplateMismatch` (a tokenizer whose chat
template re-tokenizes the prompt differently, status 1). Standard library only, so the command
line can import it without loading torch.
"""

from __future__ import annotations

from typing import ClassVar


class UserError(ValueError):
    """An error in the user's input; the message names the file, row, field or key and what to do."""

    exit_status: ClassVar[int] = 1
