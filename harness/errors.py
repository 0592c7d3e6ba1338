"""The errors a case can end in, each with a message meant for the user."""


class CaseError(Exception):
    """A case that cannot be run as asked: a bad file, a failed export, a spec
    that does not fit the model. `stage` says where (load, convert, runtime,
    inputs); the message says what to do. Other cases go on."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage
        self.message = message

    def __str__(self) -> str:
        return f"[{self.stage}] {self.message}"


def summarize_exception(error: BaseException, max_lines: int = 6) -> str:
    """The type and the first lines of an exception's message, without the
    framework's traceback, for a one-paragraph error."""
    text = str(error).strip() or repr(error)
    lines = [line for line in text.splitlines() if line.strip()]
    short = "\n".join(lines[:max_lines])
    if len(lines) > max_lines:
        short += f"\n... ({len(lines) - max_lines} more lines)"
    return f"{type(error).__name__}: {short}"
