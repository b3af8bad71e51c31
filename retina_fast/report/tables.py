"""Result tables written as CSV files (atomic: a reader never sees half a table)."""
import csv
import io

from retina_fast.fileio import write_text_atomic

__all__ = ["write_csv"]


def write_csv(path, header, rows):
    """Write `header` and `rows` (sequences of cells) as CSV to `path` atomically; returns `path`.

    Cells are written with `csv.writer` (``str`` of each value, quoted where needed), lines end in
    ``\\n``. The folder of `path` must exist.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return path
