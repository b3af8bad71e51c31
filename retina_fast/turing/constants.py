"""Names shared by the Turing-test server, its export and the analysis of the export.

One home for them, so that the app's export, the database's checks and the analysis cannot drift
apart: the export the app writes is the file the analysis reads.
"""

__all__ = [
    "ANSWERS",
    "COV_STRUCTS",
    "EXPORT_COLUMNS",
    "GROUPINGS",
    "METRICS",
    "PAPER_METHOD",
    "RATES",
    "REFERENCE",
    "REQUIRED_COLUMNS",
    "SPECIALTIES",
]

# One row per answer, in this column order (``GET /api/admin/studies/{id}/export``).
EXPORT_COLUMNS = ("study_id", "reader_id", "reader_name", "specialty", "years", "position", "image_id", "truth",
                  "answer", "correct", "server_ms", "client_ms", "answered_at", "source")
# the columns the analysis reads; the others are carried along when present
REQUIRED_COLUMNS = ("reader_id", "specialty", "years", "image_id", "truth", "answer", "server_ms")
# A reader's specialty, residents first: they are the reference group of every comparison.
SPECIALTIES = ("resident", "non_retina", "retina")
# An image's truth and a reader's answer take the same two values.
ANSWERS = ("real", "synthetic")
REFERENCE = "resident"
# Reader groupings of the analysis and the paper's name for each.
GROUPINGS = ("specialty", "experience")
PAPER_METHOD = {"specialty": "Method 2", "experience": "Method 1"}
# metric -> (outcome column, image subset, GEE family)
METRICS = {"accuracy": ("correct", None, "binomial"),
           "sensitivity": ("called_real", "real", "binomial"),
           "specificity": ("called_synthetic", "synthetic", "binomial"),
           "time_s": ("time_s", None, "gaussian")}
RATES = ("accuracy", "sensitivity", "specificity")
# GEE working correlations fitted for every metric
COV_STRUCTS = ("exchangeable", "independence")
