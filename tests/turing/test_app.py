"""API tests of the Turing-test server (retina_fast.turing.app) on tiny generated images.

The source images carry planted metadata (EXIF, PNG text, ICC) and distinct sizes/modes so the
tests can prove the served copies are uniform and clean; file names carry markers (REALSRC/SYNSRC)
that must never reach a reader.
"""
import argparse
import csv
import io
import json
import os
import re
import shutil
import subprocess
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from retina_fast.turing import app as app_module
from retina_fast.turing import cli, db
from retina_fast.turing.app import EXPORT_COLUMNS, create_app

TOKEN = "test-admin-token-0123"
ADMIN = {"X-Admin-Token": TOKEN}
N_REAL = N_SYN = 8
PLANTED = b"PLANTED-SECRET-METADATA"


def _png_chunks(data):
    """Chunk types of a PNG byte string, in order."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, i = [], 8
    while i < len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        out.append(data[i + 4:i + 8].decode("ascii"))
        i += 12 + n
    return out


def _make_images(folder, marker, n, rng):
    """n small images of assorted sizes, modes and formats, each with planted metadata."""
    folder.mkdir()
    for i in range(n):
        h, w = (64, 64) if i % 3 == 0 else ((48, 64) if i % 3 == 1 else (64, 40))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        if i % 2 == 0:
            exif = Image.Exif()
            exif[0x010E] = PLANTED.decode()        # ImageDescription
            exif[0x0131] = marker + "-camera"      # Software
            im.save(folder / f"{marker}_{i:02d}.jpg", quality=90, exif=exif.tobytes())
        else:
            info = PngImagePlugin.PngInfo()
            info.add_text("Comment", PLANTED.decode())
            info.add_text("Source", marker)
            if i % 4 == 1:
                im = im.convert("L")               # grayscale source must come out RGB
            elif i % 4 == 3:
                im = im.convert("RGBA")            # alpha must be dropped
            im.save(folder / f"{marker}_{i:02d}.png", pnginfo=info, dpi=(300, 300))
    (folder / "notes.txt").write_text("not an image, ignored")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("turing_data")
    rng = np.random.default_rng(7)
    _make_images(root / "real", "REALSRC", N_REAL, rng)
    _make_images(root / "synthetic", "SYNSRC", N_SYN, rng)
    return root


@pytest.fixture(scope="module")
def server(folders, tmp_path_factory):
    """(client, app, study_id) for one 16-image study, data root restricted to the data folder."""
    work = tmp_path_factory.mktemp("turing_srv")
    app = create_app(f"sqlite:///{work / 'turing.db'}", admin_token=TOKEN, image_store=work / "store",
                     data_root=folders)
    client = TestClient(app)
    r = client.post("/api/admin/studies", headers=ADMIN, json={
        "name": "unit", "real_dir": str(folders / "real"), "synthetic_dir": str(folders / "synthetic"),
        "seed": 11})
    assert r.status_code == 200, r.text
    assert r.json()["n_images"] == N_REAL + N_SYN
    return client, app, r.json()["study_id"]


def _reader(server, n=1):
    client, _, sid = server
    r = client.post(f"/api/admin/studies/{sid}/readers", headers=ADMIN, json={"count": n})
    assert r.status_code == 200, r.text
    return [x["token"] for x in r.json()]


def _profiled(server, specialty="retina", years=4):
    client = server[0]
    tok = _reader(server)[0]
    assert client.post(f"/api/reader/{tok}/profile",
                       json={"specialty": specialty, "years": years}).status_code == 200
    return tok


def _answer_current(client, tok, answer="real", fetch=True):
    st = client.get(f"/api/reader/{tok}/state").json()
    if fetch:
        assert client.get(f"/api/reader/{tok}/image/{st['image_id']}").status_code == 200
    r = client.post(f"/api/reader/{tok}/answer", json={"image_id": st["image_id"], "answer": answer,
                                                       "client_ms": 123.4})
    return st["image_id"], r


def _study_images(app, sid):
    """(id, position, truth, source) of the study in display order, straight from the database."""
    with app.state.engine.connect() as conn:
        return conn.execute(select(db.images.c.id, db.images.c.position, db.images.c.truth,
                                   db.images.c.source).where(db.images.c.study_id == sid)
                            .order_by(db.images.c.position)).all()


# ------------------------------------------------------------------------------------------ admin
ADMIN_CALLS = [
    ("post", "/api/admin/studies", {"name": "x", "real_dir": "/", "synthetic_dir": "/", "seed": 1}),
    ("get", "/api/admin/studies", None),
    ("post", "/api/admin/studies/{sid}/readers", {"count": 1}),
    ("get", "/api/admin/studies/{sid}/readers", None),
    ("get", "/api/admin/studies/{sid}/progress", None),
    ("get", "/api/admin/studies/{sid}/export?format=csv", None),
    ("get", "/api/admin/studies/{sid}/export?format=json", None),
]


@pytest.mark.parametrize("method,path,body", ADMIN_CALLS)
@pytest.mark.parametrize("headers,code", [({}, 401), ({"X-Admin-Token": "wrong-token-xyz"}, 403),
                                          ({"X-Admin-Token": TOKEN + "x"}, 403),
                                          ({"X-Admin-Token": ""}, 403)])
def test_admin_endpoints_refuse_bad_or_missing_token(server, method, path, body, headers, code):
    client, _, sid = server
    kw = {"json": body} if body is not None else {}
    r = getattr(client, method)(path.format(sid=sid), headers=headers, **kw)
    assert r.status_code == code
    assert "REALSRC" not in r.text and "SYNSRC" not in r.text


def test_create_app_needs_a_real_admin_token(tmp_path, monkeypatch):
    monkeypatch.delenv("RETINA_FAST_ADMIN_TOKEN", raising=False)
    with pytest.raises(ValueError, match="admin_token"):
        create_app(f"sqlite:///{tmp_path / 'a.db'}", admin_token=None, image_store=tmp_path)
    with pytest.raises(ValueError, match="admin_token"):
        create_app(f"sqlite:///{tmp_path / 'a.db'}", admin_token="short", image_store=tmp_path)


def test_stored_images_are_uniform_clean_pngs(server, folders):
    _, app, sid = server
    rows = _study_images(app, sid)
    assert sorted(r.truth for r in rows) == ["real"] * N_REAL + ["synthetic"] * N_SYN
    with app.state.engine.connect() as conn:
        store = conn.execute(select(db.studies.c.store_dir).where(db.studies.c.id == sid)).scalar_one()
    for r in rows:
        data = open(os.path.join(store, f"{r.id}.png"), "rb").read()
        # only pixel data: no eXIf, tEXt, iTXt, zTXt, iCCP, pHYs, tIME chunks
        assert _png_chunks(data) == ["IHDR"] + ["IDAT"] * (len(_png_chunks(data)) - 2) + ["IEND"]
        assert PLANTED not in data and b"SRC" not in data
        with Image.open(io.BytesIO(data)) as im:
            assert (im.size, im.mode) == ((64, 64), "RGB")   # largest source side: 64
            assert im.info == {}
        assert r.source.startswith("REALSRC" if r.truth == "real" else "SYNSRC")


def test_reencoded_pixels_keep_the_picture(server, folders):
    """The stored copy is the source (fitted to the square), not some other image."""
    _, app, sid = server
    with app.state.engine.connect() as conn:
        store = conn.execute(select(db.studies.c.store_dir).where(db.studies.c.id == sid)).scalar_one()
    for r in _study_images(app, sid):
        src = folders / ("real" if r.truth == "real" else "synthetic") / r.source
        with Image.open(src) as im:
            if im.size != (64, 64) or src.suffix != ".png":
                continue  # resized or JPEG: not pixel-exact by design
            want = np.asarray(im.convert("RGB"))
        got = np.asarray(Image.open(os.path.join(store, f"{r.id}.png")))
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "../../../../../../etc", "/etc", "/",
                                 "%2e%2e/%2e%2e/etc", "..%2f..%2fetc", "real/../../..", "does-not-exist",
                                 "real\x00", "~/"])
def test_study_folders_outside_data_root_or_missing_are_refused(server, folders, bad):
    client, app, _ = server
    path = bad if bad.startswith("/") or bad.startswith("%") or bad == "~/" else str(folders / bad)
    for key in ("real_dir", "synthetic_dir"):
        body = {"name": "evil", "real_dir": str(folders / "real"), "synthetic_dir": str(folders / "synthetic"),
                "seed": 1}
        body[key] = path
        r = client.post("/api/admin/studies", headers=ADMIN, json=body)
        assert r.status_code in (400, 422), (bad, r.text)
        assert key in r.text or r.status_code == 422


def test_symlink_leaving_data_root_is_refused(tmp_path):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    _make_images(root.parent / "outside", "OUT", 2, rng)
    root.mkdir()
    _make_images(root / "real", "REALSRC", 2, rng)
    os.symlink(root.parent / "outside", root / "linked")
    app = create_app(f"sqlite:///{tmp_path / 't.db'}", admin_token=TOKEN, image_store=tmp_path / "store",
                     data_root=root)
    client = TestClient(app)
    r = client.post("/api/admin/studies", headers=ADMIN, json={
        "name": "x", "real_dir": str(root / "real"), "synthetic_dir": str(root / "linked"), "seed": 1})
    assert r.status_code == 400 and "outside" in r.json()["detail"]
    os.symlink(root.parent / "outside" / "OUT_00.jpg", root / "real" / "zz_link.jpg")
    r = client.post("/api/admin/studies", headers=ADMIN, json={
        "name": "x", "real_dir": str(root / "real"), "synthetic_dir": str(root / "real"), "seed": 1})
    assert r.status_code == 400 and "zz_link.jpg" in r.json()["detail"]
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())


def test_bad_study_requests(server, folders, tmp_path):
    client, _, _ = server
    good = {"name": "x", "real_dir": str(folders / "real"), "synthetic_dir": str(folders / "synthetic"),
            "seed": 1}
    for patch, code in [({"n_real": N_REAL + 1}, 400), ({"n_real": 0}, 422), ({"seed": -1}, 422),
                        ({"seed": "abc"}, 422), ({"name": ""}, 422), ({"extra": 1}, 422),
                        ({"max_side": 8}, 422)]:
        r = client.post("/api/admin/studies", headers=ADMIN, json={**good, **patch})
        assert r.status_code == code, (patch, r.text)
    empty = folders / "empty_dir"
    empty.mkdir(exist_ok=True)
    r = client.post("/api/admin/studies", headers=ADMIN, json={**good, "real_dir": str(empty)})
    assert r.status_code == 400 and "no images" in r.json()["detail"]
    assert client.post("/api/admin/studies", headers=ADMIN, content=b"{not json").status_code == 422


def test_corrupt_image_is_named_and_nothing_is_kept(tmp_path):
    rng = np.random.default_rng(1)
    _make_images(tmp_path / "real", "REALSRC", 2, rng)
    _make_images(tmp_path / "syn", "SYNSRC", 2, rng)
    (tmp_path / "syn" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    app = create_app(f"sqlite:///{tmp_path / 't.db'}", admin_token=TOKEN, image_store=tmp_path / "store")
    client = TestClient(app)
    r = client.post("/api/admin/studies", headers=ADMIN, json={
        "name": "x", "real_dir": str(tmp_path / "real"), "synthetic_dir": str(tmp_path / "syn"), "seed": 1})
    assert r.status_code == 400 and "broken.png" in r.json()["detail"]
    assert client.get("/api/admin/studies", headers=ADMIN).json() == []
    assert not (tmp_path / "store").exists() or not list((tmp_path / "store").iterdir())


def test_subset_and_order_are_seeded(server, folders):
    client, app, sid = server
    base = {"real_dir": str(folders / "real"), "synthetic_dir": str(folders / "synthetic"),
            "n_real": 5, "n_synthetic": 3}
    made = [client.post("/api/admin/studies", headers=ADMIN, json={**base, "name": f"s{i}", "seed": seed}).json()
            for i, seed in enumerate((5, 5, 6))]
    orders = [[(r.truth, r.source) for r in _study_images(app, m["study_id"])] for m in made]
    assert all(m["n_images"] == 8 for m in made)
    assert orders[0] == orders[1] and orders[0] != orders[2]
    assert sum(t == "real" for t, _ in orders[0]) == 5
    ids = [[r.id for r in _study_images(app, m["study_id"])] for m in made[:2]]
    assert not set(ids[0]) & set(ids[1])  # same seed, new random ids: the seed does not give the ids away
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids[0])


def test_readers_creation(server):
    client, _, sid = server
    r = client.post(f"/api/admin/studies/{sid}/readers", headers=ADMIN, json={"names": ["Dr A", "Dr B"]})
    assert r.status_code == 200
    out = r.json()
    assert [x["name"] for x in out] == ["Dr A", "Dr B"]
    for x in out:
        assert x["url"] == f"/r/{x['token']}" and len(x["token"]) == 32
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", x["token"])
    assert out[0]["token"] != out[1]["token"]
    listed = client.get(f"/api/admin/studies/{sid}/readers", headers=ADMIN).json()
    assert [x for x in listed if x["reader_id"] in {o["reader_id"] for o in out}] == out
    assert client.get("/api/admin/studies/9999/readers", headers=ADMIN).status_code == 404
    for body in ({"count": 1, "names": ["a"]}, {}, {"count": 0}, {"names": []}, {"names": [" "]}):
        assert client.post(f"/api/admin/studies/{sid}/readers", headers=ADMIN, json=body).status_code == 422
    assert client.post("/api/admin/studies/9999/readers", headers=ADMIN, json={"count": 1}).status_code == 404
    assert client.get("/api/admin/studies/9999/progress", headers=ADMIN).status_code == 404
    assert client.get("/api/admin/studies/9999/export", headers=ADMIN).status_code == 404
    assert client.get(f"/api/admin/studies/{sid}/export?format=xml", headers=ADMIN).status_code == 422


# ----------------------------------------------------------------------------------------- reader
@pytest.mark.parametrize("tok", ["A" * 32, "nope", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "a" * 80])
def test_unknown_reader_token_is_404_everywhere(server, tok):
    client = server[0]
    assert client.get(f"/r/{tok}").status_code == 404
    assert client.get(f"/api/reader/{tok}/state").status_code == 404
    assert client.post(f"/api/reader/{tok}/profile", json={"specialty": "retina", "years": 1}).status_code == 404
    assert client.get(f"/api/reader/{tok}/image/{'0' * 32}").status_code == 404
    assert client.post(f"/api/reader/{tok}/answer",
                       json={"image_id": "0" * 32, "answer": "real"}).status_code == 404


def test_profile_once_and_validated(server):
    client = server[0]
    tok = _reader(server)[0]
    st = client.get(f"/api/reader/{tok}/state").json()
    assert st == {"profile_done": False, "position": 0, "total": 16, "image_id": None, "done": False}
    for bad in ({"specialty": "surgeon", "years": 3}, {"specialty": "retina", "years": -1},
                {"specialty": "retina", "years": 200}, {"specialty": "retina"}, {"years": 2},
                {"specialty": "retina", "years": "many"}):
        assert client.post(f"/api/reader/{tok}/profile", json=bad).status_code == 422, bad
    # no image before the profile
    _, _, sid = server
    first = _study_images(server[1], sid)[0].id
    assert client.get(f"/api/reader/{tok}/image/{first}").status_code == 409
    assert client.post(f"/api/reader/{tok}/answer", json={"image_id": first, "answer": "real"}).status_code == 409
    assert client.post(f"/api/reader/{tok}/profile", json={"specialty": "resident", "years": 2}).status_code == 200
    assert client.post(f"/api/reader/{tok}/profile", json={"specialty": "retina", "years": 9}).status_code == 409
    st = client.get(f"/api/reader/{tok}/state").json()
    assert st["profile_done"] and st["image_id"] == first


def test_only_the_current_image_can_be_fetched(server):
    client, app, sid = server
    imgs = _study_images(app, sid)
    tok = _profiled(server)
    assert client.get(f"/api/reader/{tok}/image/{imgs[1].id}").status_code == 403   # a future image
    assert client.get(f"/api/reader/{tok}/image/{'f' * 32}").status_code == 404     # unknown
    r = client.get(f"/api/reader/{tok}/image/{imgs[0].id}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "last-modified" not in r.headers and "etag" not in r.headers
    assert r.headers["cache-control"] == "no-store"
    _answer_current(client, tok)
    assert client.get(f"/api/reader/{tok}/image/{imgs[0].id}").status_code == 403   # a past image


@pytest.mark.parametrize("evil", ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
                                  "..%252f..%252fetc%252fpasswd", "....//....//etc/passwd",
                                  "%2Fetc%2Fpasswd", "..\\..\\etc\\passwd", "0" * 31 + "/",
                                  "../../../../store/x.png", "%00"])
def test_path_traversal_in_image_id_is_refused(server, evil):
    client = server[0]
    tok = _profiled(server)
    r = client.get(f"/api/reader/{tok}/image/{evil}")
    assert r.status_code in (404, 403, 405), (evil, r.status_code)
    assert b"root:" not in r.content and r.headers.get("content-type") != "image/png"
    r = client.post(f"/api/reader/{tok}/answer", json={"image_id": evil, "answer": "real"})
    assert r.status_code in (409, 422)


def test_answer_refusals(server):
    client, app, sid = server
    imgs = _study_images(app, sid)
    tok = _profiled(server)
    # not displayed yet: the server has no start time for it
    r = client.post(f"/api/reader/{tok}/answer", json={"image_id": imgs[0].id, "answer": "real"})
    assert r.status_code == 409
    assert client.get(f"/api/reader/{tok}/image/{imgs[0].id}").status_code == 200
    for bad in ({"image_id": imgs[0].id, "answer": "maybe"}, {"image_id": imgs[0].id},
                {"answer": "real"}, {"image_id": imgs[0].id, "answer": "real", "client_ms": -5},
                {"image_id": imgs[0].id, "answer": "real", "client_ms": "soon"},
                {"image_id": imgs[0].id, "answer": "real", "truth": "real"},
                {"image_id": 12, "answer": "real"}, [], "real"):
        assert client.post(f"/api/reader/{tok}/answer", json=bad).status_code == 422, bad
    assert client.post(f"/api/reader/{tok}/answer", content=b"answer=real",
                       headers={"Content-Type": "application/json"}).status_code == 422
    # an image that is not current (future), and an unknown one
    assert client.post(f"/api/reader/{tok}/answer", json={"image_id": imgs[1].id, "answer": "real"}).status_code == 409
    assert client.post(f"/api/reader/{tok}/answer", json={"image_id": "e" * 32, "answer": "real"}).status_code == 409
    r = client.post(f"/api/reader/{tok}/answer", json={"image_id": imgs[0].id, "answer": "synthetic",
                                                       "client_ms": 10})
    assert r.status_code == 200 and r.json() == {"position": 1, "done": False}
    # second answer to the same image, with the same or another value: refused, first answer stands
    for value in ("synthetic", "real"):
        r = client.post(f"/api/reader/{tok}/answer", json={"image_id": imgs[0].id, "answer": value})
        assert r.status_code == 409
    rows = [x for x in client.get(f"/api/admin/studies/{sid}/export?format=json", headers=ADMIN).json()
            if x["reader_id"] == _reader_id(app, tok)]
    assert [(x["image_id"], x["answer"]) for x in rows] == [(imgs[0].id, "synthetic")]


def _reader_id(app, tok):
    with app.state.engine.connect() as conn:
        return db.reader_by_token(conn, tok).id


def test_database_refuses_duplicate_answers_itself(server):
    """The UNIQUE constraint, not only the handler, stops a second answer (concurrent requests)."""
    client, app, sid = server
    tok = _profiled(server)
    iid, r = _answer_current(client, tok)
    assert r.status_code == 200
    rid = _reader_id(app, tok)
    row = dict(reader_id=rid, image_id=iid, position=5, answer="real", server_ms=1, answered_at=0.0)
    with pytest.raises(IntegrityError):
        with app.state.engine.begin() as conn:
            conn.execute(db.answers.insert().values(**row))


def test_concurrent_duplicate_answers_land_once(server):
    client, app, sid = server
    tok = _profiled(server)
    st = client.get(f"/api/reader/{tok}/state").json()
    client.get(f"/api/reader/{tok}/image/{st['image_id']}")
    codes, barrier = [], threading.Barrier(6)

    def post(value):
        with TestClient(app) as c:
            barrier.wait()
            codes.append(c.post(f"/api/reader/{tok}/answer",
                                json={"image_id": st["image_id"], "answer": value}).status_code)

    threads = [threading.Thread(target=post, args=("real" if i % 2 else "synthetic",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(codes) == [200] + [409] * 5
    assert client.get(f"/api/reader/{tok}/state").json()["position"] == 1


def test_server_time_runs_from_first_display_to_answer(server, monkeypatch):
    client, app, sid = server
    tok = _profiled(server)
    clock = {"t": 1_000_000.0}

    class FakeTime:
        @staticmethod
        def time():
            return clock["t"]

    monkeypatch.setattr(app_module, "time", FakeTime)
    st = client.get(f"/api/reader/{tok}/state").json()
    client.get(f"/api/reader/{tok}/image/{st['image_id']}")
    clock["t"] += 2.5
    client.get(f"/api/reader/{tok}/image/{st['image_id']}")  # a reload does not restart the clock
    clock["t"] += 1.25
    r = client.post(f"/api/reader/{tok}/answer", json={"image_id": st["image_id"], "answer": "real",
                                                       "client_ms": 3700.04})
    assert r.status_code == 200
    row = [x for x in client.get(f"/api/admin/studies/{sid}/export?format=json", headers=ADMIN).json()
           if x["reader_id"] == _reader_id(app, tok)][0]
    assert row["server_ms"] == 3750 and row["client_ms"] == 3700.0
    assert row["answered_at"].startswith("1970-01-12T13:46:43.750Z")


def test_resume_after_closing_the_tab(server):
    client, app, sid = server
    imgs = _study_images(app, sid)
    tok = _profiled(server)
    for _ in range(3):
        assert _answer_current(client, tok)[1].status_code == 200
    fresh = TestClient(app)  # a new browser session (no cookies, nothing kept), same invitation link
    assert fresh.get(f"/r/{tok}").status_code == 200
    st = fresh.get(f"/api/reader/{tok}/state").json()
    assert st == {"profile_done": True, "position": 3, "total": 16, "image_id": imgs[3].id, "done": False}
    assert fresh.get(f"/api/reader/{tok}/image/{imgs[2].id}").status_code == 403
    iid, r = _answer_current(fresh, tok)
    assert iid == imgs[3].id and r.json()["position"] == 4


def test_full_run_progress_thanks_and_export(server):
    client, app, sid = server
    imgs = _study_images(app, sid)
    toks = [_profiled(server, "resident", 1), _profiled(server, "non_retina", 12)]
    sent = {}
    rng = np.random.default_rng(3)
    for k, tok in enumerate(toks):
        for i in range(16 if k == 0 else 5):
            value = "real" if rng.random() < 0.5 else "synthetic"
            iid, r = _answer_current(client, tok, value)
            assert r.status_code == 200 and r.json() == {"position": i + 1, "done": i == 15}
            sent[(_reader_id(app, tok), iid)] = value
    st = client.get(f"/api/reader/{toks[0]}/state").json()
    assert st["done"] and st["image_id"] is None and st["position"] == 16
    assert client.post(f"/api/reader/{toks[0]}/answer",
                       json={"image_id": imgs[-1].id, "answer": "real"}).status_code == 409
    prog = {p["reader_id"]: p for p in client.get(f"/api/admin/studies/{sid}/progress", headers=ADMIN).json()}
    r0, r1 = (_reader_id(app, t) for t in toks)
    assert prog[r0]["answered"] == 16 and prog[r0]["done"] and prog[r0]["total"] == 16
    assert prog[r1]["answered"] == 5 and not prog[r1]["done"]

    rows = [x for x in client.get(f"/api/admin/studies/{sid}/export?format=json", headers=ADMIN).json()
            if x["reader_id"] in (r0, r1)]
    assert {(x["reader_id"], x["image_id"]): x["answer"] for x in rows} == sent and len(rows) == len(sent)
    truth = {i.id: (i.truth, i.source, i.position) for i in imgs}
    for x in rows:
        assert list(x) == list(EXPORT_COLUMNS)
        assert (x["truth"], x["source"], x["position"]) == truth[x["image_id"]]
        assert x["correct"] == int(x["truth"] == x["answer"]) and x["server_ms"] >= 0
        assert x["client_ms"] == 123.4 and x["study_id"] == sid
        assert (x["specialty"], x["years"]) == (("resident", 1) if x["reader_id"] == r0 else ("non_retina", 12))
    text = client.get(f"/api/admin/studies/{sid}/export?format=csv", headers=ADMIN).text
    table = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == ",".join(EXPORT_COLUMNS)
    assert len(table) == len(client.get(f"/api/admin/studies/{sid}/export?format=json", headers=ADMIN).json())
    by_key = {(int(t["reader_id"]), t["image_id"]): t for t in table}
    for x in rows:
        t = by_key[(x["reader_id"], x["image_id"])]
        assert (t["answer"], t["truth"], int(t["correct"]), int(t["server_ms"])) == \
               (x["answer"], x["truth"], x["correct"], x["server_ms"])


def test_reader_responses_never_leak_truth_sources_or_other_readers(server, folders):
    client, app, sid = server
    tok, other = _profiled(server), _profiled(server)
    _answer_current(client, other, "synthetic")
    seen = []
    seen.append(client.get(f"/r/{tok}").text)
    for static in ("reader.js", "reader.css"):
        seen.append(client.get(f"/static/{static}").text)
    for _ in range(16):
        st = client.get(f"/api/reader/{tok}/state")
        seen.append(st.text)
        iid = st.json()["image_id"]
        img = client.get(f"/api/reader/{tok}/image/{iid}")
        seen.append(img.content.decode("latin-1"))
        seen.append(client.get(f"/api/reader/{tok}/image/{'a' * 32}").text)
        r = client.post(f"/api/reader/{tok}/answer", json={"image_id": iid, "answer": "real", "client_ms": 1})
        seen.append(r.text)
        seen.append(client.post(f"/api/reader/{tok}/answer", json={"image_id": iid, "answer": "real"}).text)
    seen.append(client.get(f"/api/reader/{tok}/state").text)
    blob = "\n".join(seen)
    with app.state.engine.connect() as conn:
        store = conn.execute(select(db.studies.c.store_dir).where(db.studies.c.id == sid)).scalar_one()
    forbidden = ["REALSRC", "SYNSRC", "truth", "source", "synthetic_dir", "real_dir", str(folders),
                 store, PLANTED.decode(), other]
    for word in forbidden:
        assert word.lower() not in blob.lower(), word
    # the words real/synthetic appear only as the page's button labels and answer values
    for text in seen[3:]:
        if text.startswith("{"):
            assert "synthetic" not in text and '"real"' not in text


def test_page_has_the_contract_dom(server):
    client = server[0]
    tok = _reader(server)[0]
    html = client.get(f"/r/{tok}").text
    for needle in ('<select id="specialty"', 'value="resident"', 'value="non_retina"', 'value="retina"',
                   'id="years"', 'id="start"', '<img id="study-image"', 'id="btn-real"', 'id="btn-synthetic"',
                   '<div id="progress"', '<progress id="progress-bar"', '<div id="thanks"'):
        assert needle in html, needle
    assert "http://" not in html and "https://" not in html  # no CDN, no external fonts
    js = client.get("/static/reader.js").text
    assert "http://" not in js and "https://" not in js


# -------------------------------------------------------------------------------------------- CLI
def _parser():
    p = argparse.ArgumentParser(prog="retina-fast")
    sub = p.add_subparsers(dest="stage", required=True)
    cli.register(sub)
    return p


def test_cli_registers_serve_and_create_study():
    p = _parser()
    a = p.parse_args(["turing", "serve", "--db", "sqlite:///x.db", "--port", "8123", "--admin-token", "t" * 10])
    assert (a.db, a.port, a.host, a.admin_token, a.func.__name__) == ("sqlite:///x.db", 8123, "127.0.0.1",
                                                                      "t" * 10, "_serve")
    with pytest.raises(SystemExit):
        p.parse_args(["turing"])


def test_cli_create_study_prints_working_links(folders, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    p = _parser()
    a = p.parse_args(["turing", "create-study", "--db", url, "--real", str(folders / "real"),
                      "--synthetic", str(folders / "synthetic"), "--readers", "3", "--seed", "2",
                      "--store", str(tmp_path / "store"), "--base-url", "http://host:9/"])
    assert a.func(a) == 0
    out = capsys.readouterr().out
    links = re.findall(r"http://host:9/r/([A-Za-z0-9_-]{32})", out)
    assert len(set(links)) == 3 and "study 1: 16 images" in out
    client = TestClient(create_app(url, admin_token=TOKEN, image_store=tmp_path / "other"))
    for tok in links:
        assert client.get(f"/api/reader/{tok}/state").json()["total"] == 16
    assert client.post(f"/api/reader/{links[0]}/profile", json={"specialty": "retina", "years": 1}).status_code == 200
    st = client.get(f"/api/reader/{links[0]}/state").json()
    assert client.get(f"/api/reader/{links[0]}/image/{st['image_id']}").status_code == 200
    bad = p.parse_args(["turing", "create-study", "--db", url, "--real", str(tmp_path / "nope"),
                        "--synthetic", str(folders / "synthetic"), "--readers", "1", "--seed", "2",
                        "--store", str(tmp_path / "store")])
    with pytest.raises(ValueError, match="--real"):
        bad.func(bad)


def test_cli_analyze_subcommand_runs_the_analysis_module(monkeypatch, tmp_path, capsys):
    import sys
    import types

    import retina_fast.turing as pkg
    calls = []
    fake = types.ModuleType("retina_fast.turing.analyze")

    def fake_analyze(export, out_dir, **kwargs):
        calls.append((export, out_dir, kwargs))
        return types.SimpleNamespace(markdown="# fake tables", files=[str(tmp_path / "gee.md")])
    fake.analyze = fake_analyze
    monkeypatch.setitem(sys.modules, "retina_fast.turing.analyze", fake)
    monkeypatch.setattr(pkg, "analyze", fake, raising=False)
    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="stage"))
    args = p.parse_args(["turing", "analyze", "export.csv", "--out", str(tmp_path), "--top-k", "2"])
    assert args.turing_command == "analyze" and args.func(args) == 0
    assert calls == [("export.csv", str(tmp_path), {"groupings": ["specialty", "experience"], "years_threshold": 5,
                                                    "top_k": 2, "cov_type": "robust"})]
    assert capsys.readouterr().out == f"# fake tables\nwrote gee.md to {tmp_path}\n"
    # registering the group does not import the analysis: without it the group still works
    monkeypatch.setitem(sys.modules, "retina_fast.turing.analyze", None)
    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="stage"))
    assert p.parse_args(["turing", "serve"]).turing_command == "serve"


def test_export_is_readable_by_the_analysis_stage(server, tmp_path):
    analyze = pytest.importorskip("retina_fast.turing.analyze")
    if not hasattr(analyze, "load_export"):
        pytest.skip("analysis stage has no load_export yet")
    client, app, sid = server
    tok = _profiled(server, "non_retina", 6)
    for _ in range(4):
        _answer_current(client, tok, "synthetic")
    path = tmp_path / "export.csv"
    path.write_text(client.get(f"/api/admin/studies/{sid}/export?format=csv", headers=ADMIN).text)
    df = analyze.load_export(path)
    mine = df[df["reader_id"] == _reader_id(app, tok)]
    assert len(mine) == 4 and set(mine["answer"]) == {"synthetic"}


def test_reencode_scales_16_bit_grey_and_pads_to_a_square(tmp_path):
    from retina_fast.turing.reencode import reencode
    grey = np.array([[0, 32896, 65535, 1000]] * 2, dtype=np.uint16)   # 2 x 4 (rows x cols)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    reencode(tmp_path / "g16.png", tmp_path / "out.png", 4)
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (4, 4, 3)
    # centred: rows 1-2 hold the picture, rows 0 and 3 the black padding; grey -> equal channels
    np.testing.assert_array_equal(out[1:3, :, 0], [[0, 128, 255, 4]] * 2)
    assert (out[[0, 3]] == 0).all() and (out[..., 0] == out[..., 2]).all()
    with pytest.raises(ValueError, match="size"):
        reencode(tmp_path / "g16.png", tmp_path / "o2.png", 0)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match="bad.jpg"):
        reencode(tmp_path / "bad.jpg", tmp_path / "o3.png", 4)
    assert not (tmp_path / "o3.png").exists() and not (tmp_path / "o3.png.tmp").exists()


def test_schema_compiles_for_postgresql():
    """Only portable constructs: the DDL and the reader/export queries compile for PostgreSQL."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.schema import CreateTable
    dialect = postgresql.dialect()
    ddl = "\n".join(str(CreateTable(t).compile(dialect=dialect)) for t in db.metadata.sorted_tables)
    assert "UNIQUE (reader_id, image_id)" in ddl and "SERIAL" in ddl
    for q in (select(db.answers).where(db.answers.c.reader_id == 1),
              db.readers.update().where(db.readers.c.profile_at.is_(None)).values(years=1)):
        q.compile(dialect=dialect)


def test_cli_serve_builds_the_app_and_runs_uvicorn(monkeypatch, tmp_path, capsys):
    import uvicorn
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setenv("RETINA_FAST_ADMIN_TOKEN", "from-the-environment")
    p = _parser()
    a = p.parse_args(["turing", "serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--port", "8123",
                      "--store", str(tmp_path / "st")])
    assert a.func(a) == 0
    assert (seen["host"], seen["port"], seen["access_log"]) == ("127.0.0.1", 8123, False)
    client = TestClient(seen["app"])
    assert client.get("/api/admin/studies", headers={"X-Admin-Token": "from-the-environment"}).json() == []
    monkeypatch.delenv("RETINA_FAST_ADMIN_TOKEN")
    assert a.func(a) == 0  # no token anywhere: a random one is made and printed, never empty
    token = re.search(r"admin token .*: (\S+)", capsys.readouterr().err).group(1)
    assert len(token) == 32
    assert TestClient(seen["app"]).get("/api/admin/studies", headers={"X-Admin-Token": token}).status_code == 200


def test_admin_page_is_self_contained(server):
    client = server[0]
    html = client.get("/admin").text
    assert 'id="token"' in html and "http://" not in html and "https://" not in html
    js = client.get("/static/admin.js").text
    assert "X-Admin-Token" in js and "http://" not in js and "https://" not in js
    assert client.get("/favicon.ico").status_code == 204
    assert client.get("/docs").status_code == 404 and client.get("/openapi.json").status_code == 404


# ------------------------------------------------------------------- hostile input (issue 22)
def _raw_post(client, path, body, **headers):
    return client.post(path, content=body, headers={"Content-Type": "application/json", **headers})


def test_request_bodies_over_the_limit_get_413_for_any_token(server):
    client, _, sid = server
    tok = _reader(server)[0]
    big = b'{"specialty": "retina", "years": 3, "pad": "' + b"x" * app_module.MAX_BODY_BYTES + b'"}'

    def chunks():  # no Content-Length: the limit must count the bytes as they arrive
        for _ in range(app_module.MAX_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
    for path in (f"/api/reader/{tok}/profile", f"/api/reader/{tok}/answer", f"/api/reader/{'z' * 32}/profile",
                 "/api/admin/studies", f"/api/admin/studies/{sid}/readers"):
        for body in (big, chunks()):
            r = _raw_post(client, path, body)
            assert r.status_code == 413, (path, r.status_code, r.text)
            assert r.json() == {"detail": f"request body larger than {app_module.MAX_BODY_BYTES} bytes"}
            assert r.headers["X-Frame-Options"] == "DENY"  # the security headers still apply
    # the reader is untouched and a normal body still works
    assert client.post(f"/api/reader/{tok}/profile", json={"specialty": "retina", "years": 3}).status_code == 200


def test_body_limit_stops_reading_a_stream_at_the_limit():
    """Below FastAPI (any ASGI app): the read crossing the limit is refused, later chunks are never read."""
    got = []

    async def reader_app(scope, receive, send):
        while True:
            msg = await receive()
            got.append(len(msg.get("body", b"")))
            if not msg.get("more_body"):
                break
        await app_module.JSONResponse({"n": sum(got)})(scope, receive, send)

    client = TestClient(app_module.BodyLimit(reader_app, max_bytes=1000))
    assert client.post("/", content=b"y" * 1000).json() == {"n": 1000}
    got.clear()
    r = client.post("/", content=(b"y" * 300 for _ in range(100)))
    assert r.status_code == 413 and sum(got) <= 1200
    assert client.post("/", content=b"y" * 1001).status_code == 413
    with pytest.raises(ValueError, match="max_body_bytes"):
        create_app("sqlite://", admin_token=TOKEN, max_body_bytes=0)


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_get_422_not_500(server, word):
    """Python's JSON parser accepts NaN/Infinity; they must be refused, and the 422 must encode."""
    client, _, sid = server
    tok = _reader(server)[0]
    r = _raw_post(client, f"/api/reader/{tok}/profile", f'{{"specialty": "retina", "years": {word}}}')
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "years"], r.text
    assert client.post(f"/api/reader/{tok}/profile", json={"specialty": "retina", "years": 2}).status_code == 200
    st = client.get(f"/api/reader/{tok}/state").json()
    assert client.get(f"/api/reader/{tok}/image/{st['image_id']}").status_code == 200
    r = _raw_post(client, f"/api/reader/{tok}/answer",
                  f'{{"image_id": "{st["image_id"]}", "answer": "real", "client_ms": {word}}}')
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "client_ms"], r.text
    assert client.get(f"/api/reader/{tok}/state").json()["position"] == 0  # nothing was stored
    for path, body in ((f"/api/admin/studies/{sid}/readers", f'{{"count": {word}}}'),
                       ("/api/admin/studies", f'{{"name": "n", "real_dir": "/", "synthetic_dir": "/", '
                                              f'"seed": {word}}}')):
        r = _raw_post(client, path, body, **ADMIN)
        assert r.status_code == 422, (path, r.text)


@pytest.mark.parametrize("sid", [str(2**63), "1" + "0" * 30, "0", "-1"])
@pytest.mark.parametrize("method,path,body", [c for c in ADMIN_CALLS if "{sid}" in c[1]])
def test_out_of_range_study_ids_get_422(server, sid, method, path, body):
    """SQLite stores signed 64-bit integers: a larger id overflowed inside the driver (500)."""
    client = server[0]
    kw = {"json": body} if body is not None else {}
    r = getattr(client, method)(path.format(sid=sid), headers=ADMIN, **kw)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "study_id"], r.text
    r = getattr(client, method)(path.format(sid=2**63 - 1), headers=ADMIN, **kw)
    assert r.status_code == 404


def test_readers_per_study_are_capped(server, monkeypatch):
    client, app, sid = server
    assert db.MAX_READERS_PER_STUDY == 1000
    with app.state.engine.connect() as conn:
        have = db.readers_count(conn, sid)
    monkeypatch.setattr(db, "MAX_READERS_PER_STUDY", have + 3)
    url = f"/api/admin/studies/{sid}/readers"
    assert len(client.post(url, headers=ADMIN, json={"count": 2}).json()) == 2
    r = client.post(url, headers=ADMIN, json={"names": ["a", "b"]})
    assert r.status_code == 422 and f"maximum of {have + 3} per study" in r.json()["detail"], r.text
    assert len(client.post(url, headers=ADMIN, json={"names": ["last"]}).json()) == 1
    assert client.post(url, headers=ADMIN, json={"count": 1}).status_code == 422
    with app.state.engine.begin() as conn:
        assert db.readers_count(conn, sid) == have + 3
        with pytest.raises(ValueError, match="maximum"):
            db.add_readers(conn, sid, ["over"])


def test_answer_409_names_an_image_already_answered(server):
    """A reader whose reply was lost retries; the 409 must say that this image's answer is stored."""
    client, app, sid = server
    tok = _profiled(server)
    first, r = _answer_current(client, tok, "real")
    assert r.status_code == 200
    retry = client.post(f"/api/reader/{tok}/answer", json={"image_id": first, "answer": "synthetic"})
    assert retry.status_code == 409 and retry.json()["image_id"] == first, retry.text
    # an image this reader has not answered is not claimed as saved
    later = _study_images(app, sid)[5].id
    r = client.post(f"/api/reader/{tok}/answer", json={"image_id": later, "answer": "real"})
    assert r.status_code == 409 and "image_id" not in r.json()
    for _ in range(N_REAL + N_SYN - 1):
        _answer_current(client, tok, "synthetic")
    done = client.post(f"/api/reader/{tok}/answer", json={"image_id": first, "answer": "real"})
    assert done.status_code == 409 and done.json()["image_id"] == first
    with app.state.engine.connect() as conn:
        assert db.saved_answer(conn, _reader_id(app, tok), first) == "real"  # the first answer stands


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("failure,message,moves_on", [
    # stored, then the server died before replying: unknown, not "not saved"; the retry's 409 = saved
    ("die", "may not have been saved", False),
    # stored, reply lost, server reachable again: the page sees the answer was saved and moves on
    ("restart", "", True),
    # the request never reached the server: now it is certain that nothing was saved
    ("drop", "The answer was not saved", False),
])
def test_reader_page_after_a_lost_reply(failure, message, moves_on):
    here = os.path.dirname(__file__)
    js = os.path.join(os.path.dirname(app_module.__file__), "static", "reader.js")
    out = subprocess.run(["node", os.path.join(here, "turing_reader_harness.js"), js, failure],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["start"]["progress"] == "0 / 2" and seen["start"]["src"].endswith("a" * 32)
    after = seen["after_failure"]
    assert (message in after["error"]) if message else after["error"] == "", after
    assert "was not saved" not in after["error"] or failure == "drop"
    assert after["src"].endswith(("b" if moves_on else "a") * 32) and after["buttons"] != moves_on
    # the reader answers again: whether that gets 409 (already stored) or 200, the page moves on cleanly
    assert seen["after_retry"]["error"] == "" and seen["after_retry"]["progress"] == "1 / 2"
    assert seen["after_retry"]["src"].endswith("b" * 32)


def test_cli_serve_admin_token_from_a_file_or_the_environment(monkeypatch, tmp_path, capsys):
    import uvicorn
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setenv("RETINA_FAST_ADMIN_TOKEN", "from-the-environment")
    (tmp_path / "token").write_text("  from-the-file-0123\n")
    p = _parser()
    base = ["turing", "serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--store", str(tmp_path / "st")]
    a = p.parse_args(base + ["--admin-token-file", str(tmp_path / "token")])
    assert a.func(a) == 0 and "warning" not in capsys.readouterr().err
    client = TestClient(seen["app"])
    assert client.get("/api/admin/studies", headers={"X-Admin-Token": "from-the-file-0123"}).status_code == 200
    assert client.get("/api/admin/studies", headers={"X-Admin-Token": "from-the-environment"}).status_code == 403
    a = p.parse_args(base + ["--admin-token", "on-the-command-line"])
    assert a.func(a) == 0
    assert "--admin-token shows in the process list" in capsys.readouterr().err
    help_text = " ".join(p._subparsers._group_actions[0].choices["turing"]._subparsers._group_actions[0]
                         .choices["serve"].format_help().split())
    assert "--admin-token-file" in help_text and "$RETINA_FAST_ADMIN_TOKEN" in help_text
    assert "process list" in help_text


def test_create_app_refuses_a_missing_data_root_before_making_the_database(tmp_path):
    with pytest.raises(ValueError, match="data_root: folder not found"):
        create_app(f"sqlite:///{tmp_path / 'a.db'}", admin_token=TOKEN, data_root=tmp_path / "nope")
    assert not (tmp_path / "a.db").exists()
