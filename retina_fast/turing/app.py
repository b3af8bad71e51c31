"""FastAPI server of the visual Turing test: admin API, reader API and the reader page.

Readers only ever see opaque image IDs, their own position and the pixels of their current image;
truth, source names and other readers' answers are reachable with the admin token only.
"""
import csv
import io
import os
import re
import secrets
import time
from pathlib import Path
from typing import Literal, Optional

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from . import db
from .study import create_study, image_path

STATIC = Path(__file__).with_name("static")
EXPORT_COLUMNS = ("study_id", "reader_id", "reader_name", "specialty", "years", "position", "image_id",
                  "truth", "answer", "correct", "server_ms", "client_ms", "answered_at", "source")
# token_urlsafe(24) and token_hex(16): anything else is refused before touching the database
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")
IMAGE_ID_RE = re.compile(r"[0-9a-f]{32}")


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
    specialty: Literal["resident", "non_retina", "retina"]
    years: int = Field(ge=0, le=70)


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image_id: str = Field(min_length=1, max_length=64)
    answer: Literal["real", "synthetic"]
    # time the reader's browser measured from image display to click; optional, never trusted alone
    client_ms: Optional[float] = Field(default=None, ge=0, le=86_400_000, allow_inf_nan=False)


def create_app(db_url="sqlite:///turing.db", admin_token=None, image_store="turing_images",
               data_root=None):
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
        If given, study folders must lie inside it (after resolving '..' and symlinks).

    Returns
    -------
    fastapi.FastAPI
    """
    admin_token = admin_token if admin_token is not None else os.environ.get("RETINA_FAST_ADMIN_TOKEN")
    if not isinstance(admin_token, str) or len(admin_token) < 8:
        raise ValueError("admin_token must be a string of at least 8 characters "
                         "(or set RETINA_FAST_ADMIN_TOKEN)")
    expected = admin_token.encode()
    engine = db.make_engine(db_url)
    # no interactive docs: they load scripts from a CDN, and readers have no use for the schema
    app = FastAPI(title="retina_fast Turing test", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
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

    def admin(x_admin_token: Optional[str] = Header(default=None)):
        if x_admin_token is None:
            raise HTTPException(401, "admin token required (X-Admin-Token header)")
        if not secrets.compare_digest(x_admin_token.encode(), expected):
            raise HTTPException(403, "bad admin token")

    def study_or_404(conn, study_id):
        if conn.execute(select(db.studies.c.id).where(db.studies.c.id == study_id)).first() is None:
            raise HTTPException(404, "unknown study")

    def reader_or_404(conn, token):
        r = db.reader_by_token(conn, token) if TOKEN_RE.fullmatch(token) else None
        if r is None:
            raise HTTPException(404, "unknown invitation link")
        return r

    # ---------------------------------------------------------------- admin
    @app.post("/api/admin/studies", dependencies=[Depends(admin)])
    def new_study(body: StudyIn):
        try:
            sid, n = create_study(engine, image_store, body.name, body.real_dir, body.synthetic_dir,
                                  body.seed, body.n_real, body.n_synthetic, body.max_side, data_root)
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return {"study_id": sid, "n_images": n}

    @app.get("/api/admin/studies", dependencies=[Depends(admin)])
    def list_studies():
        with engine.connect() as conn:
            rows = conn.execute(select(db.studies.c.id, db.studies.c.name, db.studies.c.size)
                                .order_by(db.studies.c.id)).all()
            return [{"study_id": r[0], "name": r[1], "size": r[2],
                     "n_images": db.study_total(conn, r[0])} for r in rows]

    @app.post("/api/admin/studies/{study_id}/readers", dependencies=[Depends(admin)])
    def new_readers(study_id: int, body: ReadersIn):
        with engine.begin() as conn:
            study_or_404(conn, study_id)
            first = db.readers_count(conn, study_id) + 1
            names = body.names or [f"reader-{first + i:03d}" for i in range(body.count)]
            made = db.add_readers(conn, study_id, [n.strip() for n in names])
        return [{"reader_id": m["reader_id"], "name": m["name"], "token": m["token"],
                 "url": f"/r/{m['token']}"} for m in made]

    @app.get("/api/admin/studies/{study_id}/readers", dependencies=[Depends(admin)])
    def list_readers(study_id: int):
        # the invitation links again, for an admin who lost the printed list
        with engine.connect() as conn:
            study_or_404(conn, study_id)
            rows = conn.execute(select(db.readers.c.id, db.readers.c.name, db.readers.c.token)
                                .where(db.readers.c.study_id == study_id).order_by(db.readers.c.id)).all()
        return [{"reader_id": r[0], "name": r[1], "token": r[2], "url": f"/r/{r[2]}"} for r in rows]

    @app.get("/api/admin/studies/{study_id}/progress", dependencies=[Depends(admin)])
    def study_progress(study_id: int):
        with engine.connect() as conn:
            study_or_404(conn, study_id)
            return db.progress(conn, study_id)

    @app.get("/api/admin/studies/{study_id}/export", dependencies=[Depends(admin)])
    def export(study_id: int, format: Literal["csv", "json"] = Query("csv")):
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

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)  # browsers ask for it; a 404 would only clutter the logs

    @app.get("/admin", response_class=HTMLResponse)
    def admin_page():
        return HTMLResponse((STATIC / "admin.html").read_text(encoding="utf-8"))

    # ---------------------------------------------------------------- reader
    @app.get("/r/{token}", response_class=HTMLResponse)
    def reader_page(token: str):
        with engine.connect() as conn:
            reader_or_404(conn, token)
        return HTMLResponse((STATIC / "reader.html").read_text(encoding="utf-8"))

    @app.get("/api/reader/{token}/state")
    def state(token: str):
        with engine.connect() as conn:
            r = reader_or_404(conn, token)
            pos, total, img = db.reader_position(conn, r)
        profile_done = r.profile_at is not None
        return {"profile_done": profile_done, "position": pos, "total": total,
                "image_id": img.id if (img is not None and profile_done) else None,
                "done": pos >= total}

    @app.post("/api/reader/{token}/profile")
    def profile(token: str, body: ProfileIn):
        with engine.begin() as conn:
            r = reader_or_404(conn, token)
            # conditional UPDATE: of two concurrent profile posts only one matches profile_at IS NULL
            n = conn.execute(db.readers.update()
                             .where(db.readers.c.id == r.id, db.readers.c.profile_at.is_(None))
                             .values(specialty=body.specialty, years=body.years,
                                     profile_at=time.time())).rowcount
        if n != 1:
            raise HTTPException(409, "profile already given")
        return {"profile_done": True}

    def current_image(conn, r):
        if r.profile_at is None:
            raise HTTPException(409, "profile first")
        return db.reader_position(conn, r)

    @app.get("/api/reader/{token}/image/{image_id}")
    def image(token: str, image_id: str):
        with engine.connect() as conn:
            r = reader_or_404(conn, token)
            if not IMAGE_ID_RE.fullmatch(image_id):
                raise HTTPException(404, "unknown image")
            _, _, img = current_image(conn, r)
            if img is None or img.id != image_id:
                known = image_path(conn, image_id) is not None
                raise HTTPException(403 if known else 404,
                                    "not your current image" if known else "unknown image")
            path = image_path(conn, img.id)
        try:
            with engine.begin() as conn:
                conn.execute(db.views.insert().values(reader_id=r.id, image_id=img.id,
                                                      shown_at=time.time()))
        except IntegrityError:
            pass  # a reload: the first display time stands
        # Bytes, not FileResponse: its Last-Modified/ETag would expose file times and sizes on disk.
        return Response(path.read_bytes(), media_type="image/png")

    @app.post("/api/reader/{token}/answer")
    def answer(token: str, body: AnswerIn):
        now = time.time()
        with engine.connect() as conn:
            r = reader_or_404(conn, token)
            pos, total, img = current_image(conn, r)
            if img is None:
                raise HTTPException(409, "all images already answered")
            if body.image_id != img.id:
                raise HTTPException(409, "not the current image (answers cannot be changed)")
            shown = conn.execute(select(db.views.c.shown_at).where(
                db.views.c.reader_id == r.id, db.views.c.image_id == img.id)).scalar()
        if shown is None:
            raise HTTPException(409, "image not displayed yet")
        server_ms = max(0, int(round((now - shown) * 1000)))  # max: wall clock may step back
        client_ms = None if body.client_ms is None else round(body.client_ms, 1)  # 0.1 ms is plenty
        try:
            with engine.begin() as conn:
                conn.execute(db.answers.insert().values(
                    reader_id=r.id, image_id=img.id, position=pos, answer=body.answer,
                    server_ms=server_ms, client_ms=client_ms, answered_at=now))
        except IntegrityError:
            raise HTTPException(409, "image already answered") from None
        return {"position": pos + 1, "done": pos + 1 >= total}

    return app
