"""End-to-end test of the Turing-test web app in a real browser (headless Chromium via Playwright).

The app runs in-process under uvicorn on 127.0.0.1 (a free port) with a temporary SQLite database
and a 12-image study (6 crops of the real ``skimage.data.retina()`` photo, 6 phantom frames)
created through the admin API. One reader then goes through the whole study with the keyboard,
reloads mid-way, and the admin export must hold exactly the answers given, for the images shown.

Skips only when the browser stack is missing (the ``playwright`` package or Debian's Chromium at
/usr/bin/chromium); everything else that goes wrong is a failure.
"""

import csv
import io
import math
import os
import re
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the playwright Python package is not installed")
if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"Chromium not found at {CHROMIUM} (CI installs it through the Makefile)",
                allow_module_level=True)

# Not skips: a missing web stack or app is a failure of this project, not of the test machine.
import httpx
import uvicorn
from skimage import data as skdata

from retina_fast.data.phantom import make_fundus
from retina_fast.turing.app import create_app

ADMIN_TOKEN = "e2e-admin-token-7f3a"
N_REAL = N_SYN = 6
SIZE = 256
WAIT_MS = 10_000          # every browser wait is bounded
GRID = 8                  # image digest: GRID x GRID block means of RGB
# Key pressed at each position (12 answers, both kinds, not a trivial pattern).
KEYS = list("rssrsrrsrssr")
DOUBLE_KEY_AT = 2         # press the key twice back to back at this position
DOUBLE_CLICK_AT = 8       # double-click the button instead of the keyboard at this position
RELOAD_AT = 6             # reload the page when this many answers are in


# ----------------------------------------------------------------------------------------------
# fixtures

def _write_study_images(root):
    """6 real and 6 synthetic SIZE x SIZE PNGs; returns (real_dir, synthetic_dir)."""
    real_dir, syn_dir = root / "real", root / "synthetic"
    real_dir.mkdir()
    syn_dir.mkdir()
    retina = skdata.retina()                     # (1411, 1411, 3) uint8, a real fundus photo
    crop = 700
    # Corners and centre of the photo: crops differ strongly (black FOV border, disc, macula).
    origins = [(0, 0), (0, 711), (355, 355), (711, 0), (711, 711), (200, 500)]
    for k, (r0, c0) in enumerate(origins):
        tile = retina[r0:r0 + crop, c0:c0 + crop]
        tile = Image.fromarray(tile).resize((SIZE, SIZE), Image.LANCZOS)
        tile.save(real_dir / f"fundus_r{k}.png")
    for k in range(N_SYN):
        img, _ = make_fundus(100 + k, size=(SIZE, SIZE))
        Image.fromarray(img).save(syn_dir / f"fundus_s{k}.png")
    return real_dir, syn_dir


def _digest(rgb):
    """GRID x GRID x 3 block means of an (H, W, 3) image, float64 in 0-255."""
    rgb = np.asarray(rgb, dtype=np.float64)
    h, w = rgb.shape[:2]
    rows = np.linspace(0, h, GRID + 1).round().astype(int)
    cols = np.linspace(0, w, GRID + 1).round().astype(int)
    return np.array([[rgb[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].reshape(-1, 3).mean(0)
                      for j in range(GRID)] for i in range(GRID)])


@pytest.fixture
def turing_server(tmp_path):
    """The real app under uvicorn on 127.0.0.1:<free port>; stopped at teardown."""
    store = tmp_path / "store"
    store.mkdir()
    app = create_app(db_url=f"sqlite:///{tmp_path / 'turing.db'}", admin_token=ADMIN_TOKEN,
                     image_store=str(store))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))                  # the kernel picks a free port; no bind race
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited during start-up (see the captured log)")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start within 15 s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                              timeout=WAIT_MS)
        try:
            yield b
        finally:
            b.close()


# ----------------------------------------------------------------------------------------------
# page helpers

# Block means of the image as decoded by the browser (natural resolution), same grid as _digest.
_JS_DIGEST = """(img, grid) => {
    const w = img.naturalWidth, h = img.naturalHeight;
    const cv = document.createElement('canvas');
    cv.width = w; cv.height = h;
    const ctx = cv.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, w, h).data;
    const edges = n => Array.from({length: grid + 1}, (_, k) => Math.round(k * n / grid));
    const rs = edges(h), cs = edges(w), out = [];
    for (let i = 0; i < grid; i++) { const row = [];
        for (let j = 0; j < grid; j++) { const s = [0, 0, 0]; let n = 0;
            for (let r = rs[i]; r < rs[i + 1]; r++) for (let c = cs[j]; c < cs[j + 1]; c++) {
                const o = 4 * (r * w + c);
                s[0] += px[o]; s[1] += px[o + 1]; s[2] += px[o + 2]; n++; }
            row.push(s.map(v => v / n)); }
        out.push(row); }
    return {w, h, blocks: out};
}"""

_JS_IMAGE_READY = """(prev) => {
    const img = document.querySelector('#study-image');
    return !!img && img.complete && img.naturalWidth > 0 && img.src !== '' && img.src !== prev
        && img.getBoundingClientRect().width > 0
        // answering is possible (the page enables its buttons once the image has loaded)
        && !document.querySelector('#btn-real').disabled
        && !document.querySelector('#btn-synthetic').disabled;
}"""


def _progress_re(k, n):
    return re.compile(rf"(^|\D){k}\s*/\s*{n}(\D|$)")


def _wait_step(page, k, n, prev_src):
    """Wait until the page shows position k of n with a fresh, loaded image; return its src."""
    sync_api.expect(page.locator("div#progress")).to_have_text(_progress_re(k, n), timeout=WAIT_MS)
    page.wait_for_function(_JS_IMAGE_READY, arg=prev_src, timeout=WAIT_MS)
    return page.locator("img#study-image").evaluate("img => img.src")


def _shown_digest(page):
    got = page.locator("img#study-image").evaluate(_JS_DIGEST, GRID)
    return got["w"], got["h"], np.array(got["blocks"], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# the test

@pytest.mark.slow
def test_reader_goes_through_study_in_browser(turing_server, browser, tmp_path):
    base = turing_server
    real_dir, syn_dir = _write_study_images(tmp_path)
    sources = {p.name: ("real" if p.parent == real_dir else "synthetic", _digest(Image.open(p)))
               for p in sorted(real_dir.glob("*.png")) + sorted(syn_dir.glob("*.png"))}
    n = N_REAL + N_SYN

    admin = httpx.Client(base_url=base, headers={"X-Admin-Token": ADMIN_TOKEN}, timeout=30)
    try:
        r = httpx.post(f"{base}/api/admin/studies", json={}, timeout=10)
        assert r.status_code in (401, 403), f"admin API without token answered {r.status_code}"
        r = admin.post("/api/admin/studies", json={
            "name": "e2e", "real_dir": str(real_dir), "synthetic_dir": str(syn_dir), "seed": 7,
            "n_real": None, "n_synthetic": None})
        assert r.status_code == 200, r.text
        study_id, n_images = r.json()["study_id"], r.json()["n_images"]
        assert n_images == n
        r = admin.post(f"/api/admin/studies/{study_id}/readers", json={"names": ["E2E Reader"]})
        assert r.status_code == 200, r.text
        (reader,) = r.json()
        assert reader["url"] == f"/r/{reader['token']}"
        token = reader["token"]

        page_errors = []
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(WAIT_MS)
        context.set_default_navigation_timeout(WAIT_MS)
        page = context.new_page()
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))

        def state():
            s = httpx.get(f"{base}/api/reader/{token}/state", timeout=10)
            assert s.status_code == 200, s.text
            return s.json()

        # -- profile
        page.goto(base + reader["url"])
        page.locator("select#specialty").select_option("retina")
        page.locator("input#years").fill("7")
        page.locator("button#start").click()

        # -- study
        srcs, ids, shown, sizes, midway_progress = [], [], [], [], None
        prev_src = None
        for i in range(n):
            src = _wait_step(page, i, n, prev_src)
            bar = page.locator("progress#progress-bar")
            value, vmax = bar.evaluate("b => [b.value, b.max]")
            assert math.isclose(value / vmax, i / n, abs_tol=1e-6), (value, vmax, i, n)
            st = state()
            assert st["profile_done"] and not st["done"]
            assert (st["position"], st["total"]) == (i, n), st
            ids.append(st["image_id"])
            if "/image/" in src:                 # a server URL (not a blob:) names the image
                assert src.split("/image/", 1)[1].split("?", 1)[0] == st["image_id"], src
            alerts = page.locator("[role=alert]:visible")
            assert alerts.count() == 0, f"error shown to the reader: {alerts.all_inner_texts()}"
            w, h, dig = _shown_digest(page)
            sizes.append((w, h))
            shown.append(dig)
            srcs.append(src)
            html = page.content()
            leaks = [name for name in sources if os.path.splitext(name)[0] in html]
            assert not leaks, f"the reader page reveals source file names {leaks}"

            if i == RELOAD_AT:
                # Mid-way: screenshot, then reload must resume at the same image and progress.
                page.screenshot(path=str(tmp_path / "turing_e2e_midway.png"))
                shutil.copyfile(tmp_path / "turing_e2e_midway.png", "/tmp/turing_e2e_midway.png")
                midway_progress = page.locator("div#progress").inner_text()
                page.reload()
                sync_api.expect(page.locator("div#progress")).to_have_text(
                    _progress_re(i, n), timeout=WAIT_MS)
                page.wait_for_function(_JS_IMAGE_READY, arg=None, timeout=WAIT_MS)
                assert page.locator("div#progress").inner_text() == midway_progress
                assert page.locator("select#specialty").is_hidden(), "profile asked again"
                _, _, dig_after = _shown_digest(page)
                np.testing.assert_allclose(dig_after, dig, atol=1e-9,
                                           err_msg="after reload a different image is shown")
                assert state()["position"] == i

            key = KEYS[i]
            if i == DOUBLE_KEY_AT:
                page.keyboard.press(key)
                page.keyboard.press(key)
            elif i == DOUBLE_CLICK_AT:
                page.locator("button#btn-real" if key == "r" else "button#btn-synthetic").dblclick()
            else:
                page.keyboard.press(key)
            prev_src = src

        # -- end
        sync_api.expect(page.locator("div#thanks")).to_be_visible(timeout=WAIT_MS)
        sync_api.expect(page.locator("img#study-image")).to_be_hidden(timeout=WAIT_MS)
        sync_api.expect(page.locator("div#progress")).to_have_text(_progress_re(n, n),
                                                                    timeout=WAIT_MS)
        page.keyboard.press("r")                 # keys after the end must not record anything
        page.keyboard.press("s")
        st = state()
        assert st["done"] and st["position"] == n and st["image_id"] is None, st
        assert not page_errors, f"JavaScript errors on the reader page: {page_errors}"
        assert len(set(srcs)) == n, "the same image URL was shown at two positions"
        assert len(set(sizes)) == 1, f"study images are not of one size: {sorted(set(sizes))}"
        context.close()

        # -- admin side
        prog = admin.get(f"/api/admin/studies/{study_id}/progress")
        assert prog.status_code == 200, prog.text
        assert [(p["name"], p["answered"], p["total"], p["done"]) for p in prog.json()] == [
            ("E2E Reader", n, n, True)]
        exp = admin.get(f"/api/admin/studies/{study_id}/export", params={"format": "csv"})
        assert exp.status_code == 200, exp.text
        rows = list(csv.DictReader(io.StringIO(exp.text)))
        exp_json = admin.get(f"/api/admin/studies/{study_id}/export", params={"format": "json"})
        assert exp_json.status_code == 200, exp_json.text
        json_rows = exp_json.json()
    finally:
        admin.close()

    assert len(rows) == n, f"{len(rows)} answers exported for {n} images"
    fields = ("position", "image_id", "answer")
    assert sorted(tuple(str(j[k]) for k in fields) for j in json_rows) == sorted(
        tuple(c[k] for k in fields) for c in rows), "the JSON and CSV exports differ"
    rows.sort(key=lambda row: int(row["position"]))
    assert [int(row["position"]) for row in rows] == list(range(n))
    expected = ["real" if k == "r" else "synthetic" for k in KEYS]
    assert [row["answer"] for row in rows] == expected
    assert [row["image_id"] for row in rows] == ids, "export image ids differ from those shown"
    assert len(set(ids)) == n
    for row, dig in zip(rows, shown):
        assert int(row["study_id"]) == study_id
        assert int(row["reader_id"]) == reader["reader_id"]
        assert row["reader_name"] == "E2E Reader"
        assert row["specialty"] == "retina" and int(row["years"]) == 7
        truth, _ = sources[row["source"]]
        assert row["truth"] == truth
        is_correct = row["answer"] == truth
        correct_spellings = ("true", "1") if is_correct else ("false", "0")
        assert row["correct"].strip().lower() in correct_spellings, row
        assert row["server_ms"] not in ("", None) and row["client_ms"] not in ("", None), row
        server_ms, client_ms = float(row["server_ms"]), float(row["client_ms"])
        assert server_ms >= 0 and math.isfinite(client_ms) and client_ms >= 0, row
        # The server's interval (first image fetch -> answer received) encloses the browser's
        # (image loaded -> key pressed); the slack covers rounding to whole milliseconds.
        assert server_ms >= client_ms - 5, row
        assert row["answered_at"], row
        # The answer at this position belongs to the image the browser displayed there: the
        # displayed pixels are closest to this row's source among all 12 study images.
        dists = {name: float(np.abs(d - dig).mean()) for name, (_, d) in sources.items()}
        assert min(dists, key=dists.get) == row["source"], (row["position"], row["source"], dists)
        assert dists[row["source"]] < 2.0, (row["position"], row["source"], dists)
    assert sorted(row["truth"] for row in rows) == ["real"] * N_REAL + ["synthetic"] * N_SYN
