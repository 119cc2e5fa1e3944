"""Export queries declared by a package (as the `taskq-testqueries` distribution, through the
`taskq_export.queries` entry point group), with Pydantic models of their own for the parameters.

`rows_between` reads the export table (tests/export/conftest.py). `padded` writes as many bytes as
asked, to go past one upload part; with `gate`, the row of that number waits for the advisory
lock GATE_LOCK, so a test holding it can act while the export is halfway through its upload.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from taskq_export import ExportQuery

GATE_LOCK = 7_263_514  # the advisory lock `padded` waits for at its gate row


class Between(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: int = Field(ge=1, description="The first id.")
    last: int = Field(ge=1, description="The last id.")
    even_only: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Between:
        # What a JSON declaration cannot say: one parameter bounded by another.
        if self.last < self.first:
            raise ValueError(f"last ({self.last}) is before first ({self.first})")
        return self


class Padded(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int = Field(ge=1, le=1_000_000)
    width: int = Field(ge=1, le=10_000, description="Characters of padding per row.")
    gate: int = Field(default=0, ge=0, description="Row that waits for GATE_LOCK; 0: none.")


QUERIES = [
    ExportQuery(
        name="rows_between",
        source="main",
        description="Rows whose id is in a range, from a plugin.",
        sql="SELECT id, name, amount FROM export_rows "
        "WHERE id BETWEEN %(first)s AND %(last)s AND (NOT %(even_only)s OR mod(id, 2) = 0) "
        "ORDER BY id",
        params=Between,
    ),
    ExportQuery(
        name="padded",
        source="main",
        description="Numbered rows of padding.",
        sql="SELECT i AS n, repeat('x', %(width)s) AS pad FROM generate_series(1, %(rows)s) AS i "
        "WHERE CASE WHEN i = %(gate)s "
        f"THEN pg_advisory_xact_lock_shared({GATE_LOCK})::text = '' ELSE true END",
        params=Padded,
        count=False,  # counting would run the gate too, before a byte is written
    ),
]
