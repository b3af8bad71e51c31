"""Database schema and queries of the Turing-test server (SQLAlchemy 2 Core).

SQLite (WAL) by default; any SQLAlchemy URL (e.g. PostgreSQL) works because only portable Core
constructs are used. The schema is created on start (``metadata.create_all``).

Times are stored as float seconds since the Unix epoch (UTC) so that they survive restarts and
compare across server processes; durations are integer milliseconds.
"""
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (CheckConstraint, Column, Float, ForeignKey, Integer, MetaData, String, Table,
                        UniqueConstraint, create_engine, event, func, insert, select)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from .constants import ANSWERS, SPECIALTIES
# Largest row id any backend stores (SQLite and PostgreSQL BIGINT are signed 64-bit): ids beyond it
# are refused before a query, where SQLite would raise OverflowError.
MAX_ID = 2**63 - 1
# Readers per study. The paper's panel had 40; a thousand covers any real reading study while keeping
# a runaway script (or a fuzzer) from filling the table.
MAX_READERS_PER_STUDY = 1000

metadata = MetaData()


def _one_of(column, values):
    """SQL CHECK text: `column` takes one of `values`."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


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
    CheckConstraint(_one_of("truth", ANSWERS), name="ck_images_truth"),
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
    CheckConstraint("specialty IS NULL OR " + _one_of("specialty", SPECIALTIES), name="ck_readers_specialty"),
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
    CheckConstraint(_one_of("answer", ANSWERS), name="ck_answers_answer"),
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


def make_engine(db_url, arg="db_url"):
    """Engine for `db_url` with the schema created.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL, e.g. ``sqlite:///turing.db`` or ``postgresql+psycopg://user@host/db``.
    arg : str
        Name of the argument in error messages (the command line's ``--db``).

    Returns
    -------
    sqlalchemy.Engine
    """
    url = check_db_url(db_url, arg)
    kwargs = {}
    if url.get_backend_name() == "sqlite":
        # the server answers from a thread pool; sqlite3 objects may cross threads via the pool
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as e:
        raise ValueError(f"{arg} {_shown(url)}: {_first_line(e)}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        metadata.create_all(engine)
    except DBAPIError as e:  # e.g. a file that is not an SQLite database, a server refusing us
        engine.dispose()
        raise ValueError(f"{arg} {_shown(url)}: cannot open the database: {_first_line(e.orig)}") from None
    return engine


def check_db_url(db_url, arg="db_url"):
    """Parse `db_url` and, for an SQLite file, check its folder, without creating anything.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL.
    arg : str
        Name of the argument in error messages.

    Returns
    -------
    sqlalchemy.engine.URL

    Raises
    ------
    ValueError
        The URL does not parse, or names an SQLite file whose folder is missing.
    OSError
        The SQLite file or its folder is not writable.
    """
    if not isinstance(db_url, str) or not db_url:
        raise ValueError(f"{arg} must be a non-empty SQLAlchemy URL string, got {db_url!r}")
    try:
        url = make_url(db_url)
    except ArgumentError:
        raise ValueError(f"{arg}: not an SQLAlchemy URL (e.g. sqlite:///study.db): {db_url!r}") from None
    path = sqlite_file(url)
    if path is not None:
        if not path.parent.is_dir():
            raise ValueError(f"{arg} {_shown(url)}: folder not found: {path.parent}")
        if path.is_dir():
            raise ValueError(f"{arg} {_shown(url)}: is a folder, not a database file: {path}")
        target = path if path.exists() else path.parent
        # SQLite opens read-only files without complaint and fails at the first write, deep inside
        if not os.access(target, os.W_OK):
            raise OSError(f"{arg} {_shown(url)}: not writable: {target}")
    return url


def sqlite_file(url):
    """Database file of an SQLite URL (a `str` or URL), or None for other backends and in-memory ones."""
    url = make_url(url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:") \
            or url.database.startswith("file:"):
        return None
    return Path(url.database)


def _shown(url):
    return url.render_as_string(hide_password=True)


def _first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def new_token():
    """Unguessable reader token (192 random bits, URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def add_readers(conn, study_id, names):
    """Insert one reader per name; return ``[{"reader_id", "name", "token"}]`` in order.

    Raises
    ------
    ValueError
        The study would have more than `MAX_READERS_PER_STUDY` readers.
    """
    have = readers_count(conn, study_id)
    if have + len(names) > MAX_READERS_PER_STUDY:
        raise ValueError(f"readers: study {study_id} has {have} reader(s); {len(names)} more would exceed "
                         f"the maximum of {MAX_READERS_PER_STUDY} per study")
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


def saved_answer(conn, reader_id, image_id):
    """The answer ('real' or 'synthetic') the reader gave for `image_id`, or None."""
    return conn.execute(select(answers.c.answer).where(answers.c.reader_id == reader_id,
                                                       answers.c.image_id == image_id)).scalar()


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


def study_exists(conn, study_id):
    """Whether a study with this id exists."""
    return conn.execute(select(studies.c.id).where(studies.c.id == study_id)).first() is not None


def list_studies(conn):
    """Every study as ``{"study_id", "name", "size", "n_images"}``, by id."""
    rows = conn.execute(select(studies.c.id, studies.c.name, studies.c.size).order_by(studies.c.id)).all()
    return [{"study_id": r[0], "name": r[1], "size": r[2], "n_images": study_total(conn, r[0])} for r in rows]


def list_readers(conn, study_id):
    """The study's readers as ``{"reader_id", "name", "token"}``, by id."""
    rows = conn.execute(select(readers.c.id, readers.c.name, readers.c.token)
                        .where(readers.c.study_id == study_id).order_by(readers.c.id)).all()
    return [{"reader_id": r[0], "name": r[1], "token": r[2]} for r in rows]


def add_study(conn, name, seed, size, store_dir, image_rows):
    """Insert a study and its images; return the new study id.

    Parameters
    ----------
    name : str
    seed : int
    size : int
        Side of every stored image, pixels.
    store_dir : str
        Absolute folder of the stored PNGs.
    image_rows : list of dict
        ``{"id", "position", "truth", "source"}`` per image (display order).
    """
    sid = conn.execute(studies.insert().values(name=name, seed=seed, size=size, store_dir=store_dir,
                                               created_at=time.time())).inserted_primary_key[0]
    conn.execute(insert(images), [{**row, "study_id": sid} for row in image_rows])
    return sid


def image_path(conn, image_id):
    """Stored PNG path of an image id known to the database (never built from unchecked input), or None."""
    row = conn.execute(select(images.c.id, studies.c.store_dir)
                       .join(studies, images.c.study_id == studies.c.id)
                       .where(images.c.id == image_id)).first()
    return None if row is None else Path(row[1]) / f"{row[0]}.png"


def set_profile(conn, reader_id, specialty, years, profile_at):
    """Record a reader's profile (given at `profile_at`, s since the epoch) once; False if already given.

    A conditional UPDATE: of two concurrent profile posts only one matches ``profile_at IS NULL``.
    """
    n = conn.execute(readers.update()
                     .where(readers.c.id == reader_id, readers.c.profile_at.is_(None))
                     .values(specialty=specialty, years=years, profile_at=profile_at)).rowcount
    return n == 1


def record_view(conn, reader_id, image_id, shown_at):
    """Record the first display of an image to a reader at `shown_at` (s since the epoch).

    Raises IntegrityError if a display is already recorded: the first one stands.
    """
    conn.execute(views.insert().values(reader_id=reader_id, image_id=image_id, shown_at=shown_at))


def shown_at(conn, reader_id, image_id):
    """Time (s since the epoch) the image was first shown to the reader, or None."""
    return conn.execute(select(views.c.shown_at).where(views.c.reader_id == reader_id,
                                                       views.c.image_id == image_id)).scalar()


def add_answer(conn, reader_id, image_id, position, answer, server_ms, client_ms, answered_at):
    """Insert an answer (raises IntegrityError for a second answer to the image or position)."""
    conn.execute(answers.insert().values(reader_id=reader_id, image_id=image_id, position=position, answer=answer,
                                         server_ms=server_ms, client_ms=client_ms, answered_at=answered_at))
