"""The HyStreamError family.

Every error a user can cause (wrong file, bad size, impossible budget) is one of these, and its
message always says three things: what was expected, what was found, and what to do about it.
ComfyUI shows the message as the node error, the CLI prints it without a traceback.
"""


class HyStreamError(Exception):
    """Base class: `expected`, `found` and `fix` are kept as attributes for tests and the UI."""

    kind = "HyStream error"

    def __init__(self, expected: str, found: str, fix: str = "", *, where: str = ""):
        self.expected = expected
        self.found = found
        self.fix = fix
        self.where = where
        parts = [f"{self.kind}{' in ' + where if where else ''}: expected {expected}; found {found}."]
        if fix:
            parts.append(f"What to do: {fix}")
        super().__init__(" ".join(parts))


class CorruptFileError(HyStreamError):
    """The file cannot be read as what its extension says (bad header, truncated data)."""

    kind = "Unreadable model file"


class WrongModelError(HyStreamError):
    """The file is a valid checkpoint, but of another model (a VAE given as the DiT, ...)."""

    kind = "Wrong model file"


class UnsupportedLayoutError(HyStreamError):
    """The key names match none of the checkpoint layouts HyStream knows."""

    kind = "Unsupported checkpoint layout"


class UnsupportedVariantError(HyStreamError):
    """A model variant no registered family runs (e.g. a HunyuanImage DiT, a super-resolution model)."""

    kind = "Unsupported model variant"


class StateDictError(HyStreamError):
    """Missing or unexpected keys, or tensor shapes that contradict each other."""

    kind = "Checkpoint does not fit the model"


class InputError(HyStreamError):
    """Bad user input at run time: sizes, frame counts, conditioning, option values."""

    kind = "Invalid input"


class BudgetError(HyStreamError):
    """A memory budget that cannot hold even the minimum the stage needs."""

    kind = "Memory budget too small"


class NotFoundError(HyStreamError):
    """A file or folder the user named (or that we looked for) does not exist."""

    kind = "File not found"


def list_some(items, limit: int = 6) -> str:
    """`a, b, c (and 12 more)`: short lists of keys for error messages."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    if len(items) > limit:
        shown += f" (and {len(items) - limit} more)"
    return shown or "(none)"


class NonFiniteError(HyStreamError):
    """NaN or Inf in a stage's output: the video would be black or noise, so it is never passed on."""

    kind = "Numerical failure (NaN/Inf)"


class OutputError(HyStreamError):
    """An output (the mp4, a report) could not be written where asked."""

    kind = "Could not write the output"


def format_bytes(n: float) -> str:
    """`12.3 GiB`, `640 MiB`, `4.8 KiB`: sizes in messages, readable at any scale."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if n / size < 100 else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"
