"""User-facing errors: one line that names the file or flag and what was expected.

The command-line entry points catch `SmplerError` and print `error: <message>` with a non-zero exit and no
traceback; library users get an ordinary exception (a `ValueError` subclass, so generic handlers still work).
"""


class SmplerError(ValueError):
    """A problem with the user's input (file, flag, tensor), stated in one line."""


def one_line(e: BaseException) -> str:
    """Any exception as one short line, `ClassName: first line of its message` (for reports and skip reasons)."""
    msg = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {msg[0] if msg else ''}"[:300]


def opt(name: str) -> str:
    """An option cited in a message by the library's own name for it (the keyword argument or field: `batch`,
    `force`); a command shows its flag there instead (`cli/common.flag_message`), so flags stay in `cli/`."""
    return f"`{name}`"


class OptionError(SmplerError):
    """A bad option value, named by its field (e.g. `EngineOptions.sms`); a command names its own flag instead
    (`named`), so the library carries no flag spellings and the message a user sees keeps the flag."""

    def __init__(self, field: str, value, detail: str):
        self.field, self.value, self.detail = field, value, detail
        super().__init__(self.named(field))

    def named(self, name: str) -> str:
        return f"{name}: {self.detail}" if self.value is None else f"{name} {self.value}: {self.detail}"
