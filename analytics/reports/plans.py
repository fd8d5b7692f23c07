"""Which rollup rows answer one dimension of a report (`Plan`), and which plans read the rows of each rollup
dimension (`readers_of`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models import COMPOUND_SEPARATOR, compound_parts


@dataclass(frozen=True)
class Plan:
    """The rollup rows that answer one dimension of a report: those of `dimension` whose value (or the `match`ed parts
    of a pair's or triple's value: 0, 1, 2 of `parts`) equals each given value; the key reported for a row is its
    value, a part of it (`report`), or a fixed label ('' for the total)."""

    dimension: str
    match: tuple[tuple[int | None, str], ...] = ()
    report: int | str | None = None
    values: tuple[str, ...] = ()  # when known: every value the match can select (a seek each: `dailyrollup_value`)
    parts: int = 2

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition (and its parameters) that selects the plan's rows (a superset where the known parts are
        neither leading nor trailing: `reads` keeps the plan's own)."""
        condition, params = "dimension = %s", [self.dimension]
        parts = dict(self.match)
        leading = [parts[at] for at in range(self.parts) if all(before in parts for before in range(at + 1))]
        trailing = [parts[at] for at in range(self.parts) if all(after in parts for after in range(at, self.parts))]
        if self.values:
            condition += f" AND value IN ({', '.join(['%s'] * len(self.values))})"
            params += self.values
        elif None in parts:
            condition += " AND value = %s"
            params.append(parts[None])
        elif len(parts) == self.parts:
            condition += " AND value = %s"
            params.append(COMPOUND_SEPARATOR.join(parts[at] for at in range(self.parts)))
        elif leading:  # the value's first parts: it starts with them and a separator
            prefix = COMPOUND_SEPARATOR.join(leading) + COMPOUND_SEPARATOR
            condition += " AND substr(value, 1, CAST(%s AS INTEGER)) = %s"
            params += [len(prefix), prefix]
        elif trailing:  # its last parts: it ends with them (shorter values cannot: their substr is shorter)
            suffix = COMPOUND_SEPARATOR + COMPOUND_SEPARATOR.join(trailing)
            condition += " AND substr(value, length(value) - CAST(%s AS INTEGER)) = %s"
            params += [len(suffix) - 1, suffix]
        return f"({condition})", params

    def reads(self, dimension: str, value: str) -> bool:
        if dimension != self.dimension:
            return False
        if not self.match:
            return True
        if self.match[0][0] is None:
            return value == self.match[0][1]
        parts = compound_parts(value, self.parts)
        return all(parts[at] == expected for at, expected in self.match)

    def reported(self, value: str) -> str:
        if isinstance(self.report, str):
            return self.report
        return value if self.report is None else compound_parts(value, self.parts)[self.report]


def readers_of(plans: dict[str, Plan]) -> dict[str, list[tuple[str, Plan]]]:
    """Per rollup dimension, the (asked dimension, plan) pairs that read its rows: a row is matched against those
    alone, not every plan of the report."""
    readers: dict[str, list[tuple[str, Plan]]] = {}
    for dimension, plan in plans.items():
        readers.setdefault(plan.dimension, []).append((dimension, plan))
    return readers
