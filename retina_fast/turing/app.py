"""FastAPI server of the visual Turing test: admin API, reader API and the reader page.

Readers only ever see opaque image IDs, their own position and the pixels of their current image;
truth, source names and other readers' answers are reachable with the admin token only.

The routes are grouped by resource, one ``APIRouter`` each (``reader``, ``admin_studies``,
``admin_export``, ``pages``); they reach the database through the ``EngineDep`` dependency (the
application's engine, ``app.state.engine``) and the queries of ``db``, and the settings of
``create_app`` through ``SettingsDep``.
"""
import csv
import io
import math
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from ..checks import check_int
from . import db
from .constants import ANSWERS, EXPORT_COLUMNS, SPECIALTIES
from .study import create_study

STATIC = Path(__file__).with_name("static")
# token_urlsafe(24) and token_hex(16): anything else is refused before touching the database
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
IMAGE_ID_RE = re.compile(r"[0-9a-f]{32}")
# Largest request body accepted, checked before anything parses it. The biggest legitimate body is
# an admin's list of 1000 reader names of up to 200 characters; readers send under 200 bytes.
MAX_BODY_BYTES = 1 << 20
# A study id in a URL: larger integers cannot be stored, and SQLite would overflow on them.
StudyId = Annotated[int, PathParam(ge=1, le=db.MAX_ID)]


# ------------------------------------------------------------------------------------ request bodies

class StudyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    real_dir: str = Field(min_length=1, max_length=4096)
    synthetic_dir: str = Field(min_length=1, max_length=4096)
    seed: int = Field(ge=0, le=2**63 - 1)
    n_real: Optional[int] = Field(default=None, ge=1)
    n_synthetic: Optional[int] = Field(default=None, ge=1)
    max_side: int = Field(default=1024, ge=16, le=8192)


class ReadersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: Optional[int] = Field(default=None, ge=1, le=1000)
    names: Optional[list[str]] = Field(default=None, min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _one_of(self):
        if (self.count is None) == (self.names is None):
            raise ValueError("give exactly one of 'count' or 'names'")
        if self.names is not None and any(not n.strip() or len(n) > 200 for n in self.names):
            raise ValueError("names must be non-empty strings of at most 200 characters")
        return self


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    specialty: Literal[SPECIALTIES]
    years: int = Field(ge=0, le=70)


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_id: str = Field(min_length=1, max_length=64)
    answer: Literal[ANSWERS]
    # time the reader's browser measured from image display to click; optional, never trusted alone
    client_ms: Optional[float] = Field(default=None, ge=0, le=86_400_000, allow_inf_nan=False)



# ----------------------------------------------------------------------------------------- replies

class StudyCreated(BaseModel):
    study_id: int
    n_images: int


class StudySummary(BaseModel):
    study_id: int
    name: str
    size: int
    n_images: int


class ReaderLink(BaseModel):
    reader_id: int
    name: str
    token: str
    url: str


class ReaderProgress(BaseModel):
    reader_id: int
    name: str
    answered: int
    total: int
    done: bool


class ReaderState(BaseModel):
    profile_done: bool
    position: int
    total: int
    # the current image, once the profile is given and while images remain
    image_id: Optional[str]
    done: bool


class ProfileDone(BaseModel):
    profile_done: bool


class AnswerSaved(BaseModel):
    position: int
    done: bool


# ------------------------------------------------------------------------------------ dependencies

@dataclass(frozen=True)
class Settings:
    """What ``create_app`` was given, for the routes (``app.state.settings``)."""

    admin_token: bytes
    image_store: object
    data_root: object


async def get_engine(request: Request) -> Engine:
    """The application's database engine."""
    return request.app.state.engine


async def get_settings(request: Request) -> Settings:
    """The application's settings."""
    return request.app.state.settings


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def require_admin(settings: SettingsDep, x_admin_token: Optional[str] = Header(default=None)):
    """401 without the ``X-Admin-Token`` header, 403 with a wrong one."""
    if x_admin_token is None:
        raise HTTPException(401, "admin token required (X-Admin-Token header)")
    if not secrets.compare_digest(x_admin_token.encode(), settings.admin_token):
        raise HTTPException(403, "bad admin token")


def study_or_404(conn, study_id):
    if not db.study_exists(conn, study_id):
        raise HTTPException(404, "unknown study")


def reader_or_404(conn, token):
    r = db.reader_by_token(conn, token) if TOKEN_RE.fullmatch(token) else None
    if r is None:
        raise HTTPException(404, "unknown invitation link")
    return r


def current_image(conn, r):
    """``(position, total, image row or None)`` of a reader who has given the profile (409 otherwise)."""
    if r.profile_at is None:
        raise HTTPException(409, "profile first")
    return db.reader_position(conn, r)


def already_answered(image_id):
    # Names the image, so that a client whose earlier reply was lost (a dropped connection, a
    # restarted server) can tell that its answer for this image is stored, and move on. The
    # stored answer itself is not echoed: reader replies carry no 'real'/'synthetic' at all.
    return JSONResponse({"detail": "image already answered (answers cannot be changed)",
                         "image_id": image_id}, status_code=409)


def _link(row):
    """A reader's ``{"reader_id", "name", "token"}`` with its invitation link."""
    return {**row, "url": f"/r/{row['token']}"}


# ---------------------------------------------------------------------------------- admin: studies

admin_studies = APIRouter(prefix="/api/admin/studies", tags=["admin studies"],
                          dependencies=[Depends(require_admin)])


@admin_studies.post("", response_model=StudyCreated)
def new_study(body: StudyIn, engine: EngineDep, settings: SettingsDep):
    try:
        sid, n = create_study(engine, settings.image_store, body.name, body.real_dir, body.synthetic_dir,
                              body.seed, body.n_real, body.n_synthetic, body.max_side, settings.data_root)
    except ValueError as e:
        raise HTTPException(400, str(e)) from None
    return {"study_id": sid, "n_images": n}


@admin_studies.get("", response_model=list[StudySummary])
def list_studies(engine: EngineDep):
    with engine.connect() as conn:
        return db.list_studies(conn)


@admin_studies.post("/{study_id}/readers", response_model=list[ReaderLink])
def new_readers(study_id: StudyId, body: ReadersIn, engine: EngineDep):
    with engine.begin() as conn:
        study_or_404(conn, study_id)
        first = db.readers_count(conn, study_id) + 1
        names = body.names or [f"reader-{first + i:03d}" for i in range(body.count)]
        try:
            made = db.add_readers(conn, study_id, [n.strip() for n in names])
        except ValueError as e:  # over the readers-per-study cap
            raise HTTPException(422, str(e)) from None
    return [_link(m) for m in made]


@admin_studies.get("/{study_id}/readers", response_model=list[ReaderLink])
def list_readers(study_id: StudyId, engine: EngineDep):
    # the invitation links again, for an admin who lost the printed list
    with engine.connect() as conn:
        study_or_404(conn, study_id)
        rows = db.list_readers(conn, study_id)
    return [_link(r) for r in rows]


@admin_studies.get("/{study_id}/progress", response_model=list[ReaderProgress])
def study_progress(study_id: StudyId, engine: EngineDep):
    with engine.connect() as conn:
        study_or_404(conn, study_id)
        return db.progress(conn, study_id)


# ----------------------------------------------------------------------------------- admin: export

admin_export = APIRouter(prefix="/api/admin/studies", tags=["admin export"],
                         dependencies=[Depends(require_admin)])


@admin_export.get("/{study_id}/export")
def export(study_id: StudyId, engine: EngineDep, format: Literal["csv", "json"] = Query("csv")):
    with engine.connect() as conn:
        study_or_404(conn, study_id)
        rows = db.export_rows(conn, study_id)
    if format == "json":
        return JSONResponse(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="turing_study_{study_id}.csv"'})


# ------------------------------------------------------------------------------------------- pages

pages = APIRouter(tags=["pages"])


@pages.get("/favicon.ico", include_in_schema=False)
def favicon():
    return Response(status_code=204)  # browsers ask for it; a 404 would only clutter the logs


@pages.get("/admin", response_class=HTMLResponse)
def admin_page():
    return HTMLResponse((STATIC / "admin.html").read_text(encoding="utf-8"))


@pages.get("/r/{token}", response_class=HTMLResponse)
def reader_page(token: str, engine: EngineDep):
    with engine.connect() as conn:
        reader_or_404(conn, token)
    return HTMLResponse((STATIC / "reader.html").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ reader

reader = APIRouter(prefix="/api/reader", tags=["reader"])


@reader.get("/{token}/state", response_model=ReaderState)
def state(token: str, engine: EngineDep):
    with engine.connect() as conn:
        r = reader_or_404(conn, token)
        pos, total, img = db.reader_position(conn, r)
    profile_done = r.profile_at is not None
    return {"profile_done": profile_done, "position": pos, "total": total,
            "image_id": img.id if (img is not None and profile_done) else None,
            "done": pos >= total}


@reader.post("/{token}/profile", response_model=ProfileDone)
def profile(token: str, body: ProfileIn, engine: EngineDep):
    with engine.begin() as conn:
        r = reader_or_404(conn, token)
        first = db.set_profile(conn, r.id, body.specialty, body.years, time.time())
    if not first:
        raise HTTPException(409, "profile already given")
    return {"profile_done": True}


@reader.get("/{token}/image/{image_id}")
def image(token: str, image_id: str, engine: EngineDep):
    with engine.connect() as conn:
        r = reader_or_404(conn, token)
        if not IMAGE_ID_RE.fullmatch(image_id):
            raise HTTPException(404, "unknown image")
        _, _, img = current_image(conn, r)
        if img is None or img.id != image_id:
            known = db.image_path(conn, image_id) is not None
            raise HTTPException(403 if known else 404,
                                "not your current image" if known else "unknown image")
        path = db.image_path(conn, img.id)
    try:
        with engine.begin() as conn:
            db.record_view(conn, r.id, img.id, time.time())
    except IntegrityError:
        pass  # a reload: the first display time stands
    # Bytes, not FileResponse: its Last-Modified/ETag would expose file times and sizes on disk.
    return Response(path.read_bytes(), media_type="image/png")


@reader.post("/{token}/answer", response_model=AnswerSaved)
def answer(token: str, body: AnswerIn, engine: EngineDep):
    now = time.time()
    with engine.connect() as conn:
        r = reader_or_404(conn, token)
        pos, total, img = current_image(conn, r)
        if img is None or body.image_id != img.id:
            saved = (db.saved_answer(conn, r.id, body.image_id)
                     if IMAGE_ID_RE.fullmatch(body.image_id) else None)
            if saved is not None:
                return already_answered(body.image_id)
            raise HTTPException(409, "all images already answered" if img is None
                                else "not the current image (answers cannot be changed)")
        shown = db.shown_at(conn, r.id, img.id)
    if shown is None:
        raise HTTPException(409, "image not displayed yet")
    server_ms = max(0, int(round((now - shown) * 1000)))  # max: wall clock may step back
    client_ms = None if body.client_ms is None else round(body.client_ms, 1)  # 0.1 ms is plenty
    try:
        with engine.begin() as conn:
            db.add_answer(conn, r.id, img.id, pos, body.answer, server_ms, client_ms, now)
    except IntegrityError:
        # a concurrent request for the same image won the insert
        with engine.connect() as conn:
            saved = db.saved_answer(conn, r.id, img.id)
        if saved is None:
            raise HTTPException(409, "image already answered") from None
        return already_answered(img.id)
    return {"position": pos + 1, "done": pos + 1 >= total}


# ------------------------------------------------------------------------------- body-size limit

class BodyTooLarge(HTTPException):
    """413 for a request body over the limit; raised from `receive`, so FastAPI passes it through."""

    def __init__(self, limit):
        super().__init__(413, f"request body larger than {limit} bytes")


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` with 413, before any parsing.

    A declared Content-Length over the limit is refused without reading; otherwise the bytes are
    counted as they stream in (chunked uploads declare no length), and the read that crosses the
    limit raises :class:`BodyTooLarge`.
    """

    def __init__(self, app, max_bytes=MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await _send_error(scope, send, 413 if declared.isdigit() else 400,
                                     f"request body larger than {self.max_bytes} bytes"
                                     if declared.isdigit() else "bad Content-Length header")
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as e:
            # only reached if something outside FastAPI's exception handling read the body
            if started:
                raise
            await _send_error(scope, send, e.status_code, e.detail)


async def _send_error(scope, send, status, detail):
    await JSONResponse({"detail": detail}, status_code=status)(scope, None, send)


def _finite(obj):
    """`obj` with every NaN or infinite float replaced by its name, so that it encodes as JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------- app

def create_app(db_url="sqlite:///turing.db", admin_token=None, image_store="turing_images",
               data_root=None, max_body_bytes=MAX_BODY_BYTES):
    """Build the Turing-test FastAPI application.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL; the schema is created on start.
    admin_token : str or None
        Secret expected in the ``X-Admin-Token`` header of admin requests; None reads the
        ``RETINA_FAST_ADMIN_TOKEN`` environment variable.
    image_store : str or Path
        Folder receiving the re-encoded images of studies created through the API.
    data_root : str or Path or None
        If given, an existing folder; study folders must lie inside it (after resolving '..' and
        symlinks).
    max_body_bytes : int
        Largest request body accepted (bytes), for every endpoint and any token; larger ones get
        413 before they are parsed.

    Returns
    -------
    fastapi.FastAPI

    Raises
    ------
    ValueError
        A bad token, database URL, data root or body limit; checked before the database is created.
    """
    admin_token = admin_token if admin_token is not None else os.environ.get("RETINA_FAST_ADMIN_TOKEN")
    if not isinstance(admin_token, str) or len(admin_token) < 8:
        raise ValueError("admin_token must be a string of at least 8 characters "
                         "(or set RETINA_FAST_ADMIN_TOKEN)")
    if data_root is not None and not Path(data_root).is_dir():
        raise ValueError(f"data_root: folder not found: {data_root}")
    max_body_bytes = check_int("max_body_bytes", max_body_bytes, 1)
    engine = db.make_engine(db_url)
    # no interactive docs: they load scripts from a CDN, and readers have no use for the schema
    app = FastAPI(title="retina_fast Turing test", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.settings = Settings(admin_token.encode(), image_store, data_root)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # added before the header middleware, so that it sits inside it and a 413 gets the headers too
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.middleware("http")(_headers)
    for router in (admin_studies, admin_export, pages, reader):
        app.include_router(router)
    return app


async def _invalid(request, exc):
    # As FastAPI's own 422, except that NaN/Infinity (which Python's JSON parser accepts) are
    # echoed as names: JSON cannot encode them, and the 422 itself would fail with a 500.
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


async def _headers(request, call_next):
    resp = await call_next(request)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"  # reader tokens live in URLs
    resp.headers["X-Frame-Options"] = "DENY"
    # Only our own files load. 'unsafe-eval' because browser-test tools (Playwright's
    # wait_for_function) evaluate strings in the page; our scripts have no eval sink.
    resp.headers["Content-Security-Policy"] = ("default-src 'self'; script-src 'self' 'unsafe-eval'; "
                                               "frame-ancestors 'none'")
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp
