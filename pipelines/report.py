"""Plain-text tables for the demo, benchmarks and evaluation reports."""


def format_table(header, rows):
    """Right-aligned columns, a rule under the header.

    >>> print(format_table(["a", "b"], [(1, 22)]))
    a |  b
    --+---
    1 | 22
    """
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [" | ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
