"""The one error type for a bad catalog entry, spec file or config.json."""

from __future__ import annotations


class SpecError(ValueError):
    """Bad input data: names the file, the line (when known) and the field."""

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.field = field
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file + (f":{self.line}" if self.line is not None else ""))
        if self.field:
            parts.append(f"field '{self.field}'")
        return ": ".join([*parts, self.message])

    def located(self, *, file: str | None = None, line: int | None = None,
                prefix: str | None = None) -> SpecError:
        """A copy with the location filled in where it was missing."""
        field = self.field
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        return SpecError(self.message, file=self.file or file, field=field,
                         line=self.line if self.line is not None else line)
