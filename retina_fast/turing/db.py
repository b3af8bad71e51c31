"""Database schema and queries of the Turing-test server (SQLAlchemy 2 Core).

SQLite (WAL) by default; any SQLAlchemy URL (e.g. PostgreSQL) works because only portable Core
constructs are used. The schema is created on start (``metadata.create_all``).

Times are stored as float seconds since the Unix epoch (UTC) so that they survive restarts and
compare across server processes; durations are integer milliseconds.
"""
import secrets
import time
from datetime import datetime, timezone

from sqlalchemy import (CheckConstraint, Column, Float, ForeignKey, Integer, MetaData, String, Table,
                        UniqueConstraint, create_engine, event, func, select)

TRUTHS = ("real", "synthetic")
SPECIALTIES = ("resident", "non_retina", "retina")

metadata = MetaData()

studies = Table(
    "studies", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("size", Integer, nullable=False),           # every stored image is size x size pixels
    # absolute folder of the re-encoded PNGs; kept per study so `serve` finds studies made by the CLI
    Column("store_dir", String(4096), nullable=False),
    Column("created_at", Float, nullable=False),
)

images = Table(
    "images", metadata,
    # random hex, unrelated to file name, truth or position: the only handle readers ever see
    Column("id", String(32), primary_key=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),     # 0-based display order, shared by all readers
    Column("truth", String(16), nullable=False),
    Column("source", String(4096), nullable=False),  # original file name (admin export only)
    UniqueConstraint("study_id", "position"),
    CheckConstraint("truth IN ('real', 'synthetic')", name="ck_images_truth"),
)

readers = Table(
    "readers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False, index=True),
    Column("token", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("specialty", String(16), nullable=True),
    Column("years", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("profile_at", Float, nullable=True),
    CheckConstraint("specialty IS NULL OR specialty IN ('resident', 'non_retina', 'retina')",
                    name="ck_readers_specialty"),
)

# First display of an image to a reader: the server-side start of the answer time.
views = Table(
    "views", metadata,
    Column("reader_id", Integer, ForeignKey("readers.id"), primary_key=True),
    Column("image_id", String(32), ForeignKey("images.id"), primary_key=True),
    Column("shown_at", Float, nullable=False),
)

answers = Table(
    "answers", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reader_id", Integer, ForeignKey("readers.id"), nullable=False),
    Column("image_id", String(32), ForeignKey("images.id"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("answer", String(16), nullable=False),
    Column("server_ms", Integer, nullable=False),
    Column("client_ms", Float, nullable=True),
    Column("answered_at", Float, nullable=False),
    # The database, not the request handler, refuses a second answer: two concurrent requests for the
    # same image both pass any check-then-insert, but only one INSERT can satisfy these constraints.
    UniqueConstraint("reader_id", "image_id", name="uq_answers_reader_image"),
    UniqueConstraint("reader_id", "position", name="uq_answers_reader_position"),
    CheckConstraint("answer IN ('real', 'synthetic')", name="ck_answers_answer"),
    CheckConstraint("server_ms >= 0", name="ck_answers_server_ms"),
)


def _sqlite_pragmas(dbapi_conn, _record):
    # WAL lets readers proceed while one writer commits; busy_timeout makes a writer wait for the
    # lock instead of failing at once under concurrent answers.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(db_url):
    """Engine for `db_url` with the schema created.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL, e.g. ``sqlite:///turing.db`` or ``postgresql+psycopg://user@host/db``.

    Returns
    -------
    sqlalchemy.Engine
    """
    if not isinstance(db_url, str) or not db_url:
        raise ValueError(f"db_url must be a non-empty SQLAlchemy URL string, got {db_url!r}")
    kwargs = {}
    if db_url.startswith("sqlite"):
        # the server answers from a thread pool; sqlite3 objects may cross threads via the pool
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(db_url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    metadata.create_all(engine)
    return engine


def new_token():
    """Unguessable reader token (192 random bits, URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def add_readers(conn, study_id, names):
    """Insert one reader per name; return ``[{"reader_id", "name", "token"}]`` in order."""
    out = []
    now = time.time()
    for name in names:
        token = new_token()
        rid = conn.execute(readers.insert().values(study_id=study_id, token=token, name=name,
                                                   created_at=now)).inserted_primary_key[0]
        out.append({"reader_id": rid, "name": name, "token": token})
    return out


def reader_by_token(conn, token):
    """The reader row for `token`, or None."""
    return conn.execute(select(readers).where(readers.c.token == token)).first()


def study_total(conn, study_id):
    """Number of images in the study."""
    return conn.execute(select(func.count()).select_from(images)
                        .where(images.c.study_id == study_id)).scalar_one()


def answered_count(conn, reader_id):
    """Number of answers the reader has given (= the 0-based position of the current image)."""
    return conn.execute(select(func.count()).select_from(answers)
                        .where(answers.c.reader_id == reader_id)).scalar_one()


def image_at(conn, study_id, position):
    """Image row at display `position` of the study, or None past the end."""
    return conn.execute(select(images).where(images.c.study_id == study_id,
                                             images.c.position == position)).first()


def reader_position(conn, reader):
    """``(position, total, current_image_row_or_None)`` of a reader."""
    pos = answered_count(conn, reader.id)
    total = study_total(conn, reader.study_id)
    return pos, total, (image_at(conn, reader.study_id, pos) if pos < total else None)


def progress(conn, study_id):
    """Per-reader progress rows ``{"reader_id", "name", "answered", "total", "done"}``."""
    total = study_total(conn, study_id)
    counts = (select(answers.c.reader_id, func.count().label("n"))
              .group_by(answers.c.reader_id).subquery())
    rows = conn.execute(select(readers.c.id, readers.c.name, func.coalesce(counts.c.n, 0))
                        .select_from(readers.outerjoin(counts, counts.c.reader_id == readers.c.id))
                        .where(readers.c.study_id == study_id).order_by(readers.c.id)).all()
    return [{"reader_id": r[0], "name": r[1], "answered": int(r[2]), "total": total,
             "done": int(r[2]) >= total} for r in rows]


def export_rows(conn, study_id):
    """One dict per answer, in (reader_id, position) order, with the export columns."""
    q = (select(readers.c.id, readers.c.name, readers.c.specialty, readers.c.years,
                answers.c.position, answers.c.image_id, images.c.truth, answers.c.answer,
                answers.c.server_ms, answers.c.client_ms, answers.c.answered_at, images.c.source)
         .select_from(answers.join(readers, answers.c.reader_id == readers.c.id)
                      .join(images, answers.c.image_id == images.c.id))
         .where(readers.c.study_id == study_id)
         .order_by(readers.c.id, answers.c.position))
    out = []
    for r in conn.execute(q):
        out.append({"study_id": study_id, "reader_id": r[0], "reader_name": r[1], "specialty": r[2],
                    "years": r[3], "position": r[4], "image_id": r[5], "truth": r[6], "answer": r[7],
                    "correct": int(r[6] == r[7]), "server_ms": r[8], "client_ms": r[9],
                    "answered_at": _iso(r[10]), "source": r[11]})
    return out


def _iso(t):
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-26T09:00:00.123Z."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def readers_count(conn, study_id):
    """Number of readers invited to the study."""
    return conn.execute(select(func.count()).select_from(readers)
                        .where(readers.c.study_id == study_id)).scalar_one()
