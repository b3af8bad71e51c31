"""Load test of the Turing-test server: many concurrent readers against a real uvicorn process.

A server subprocess (uvicorn, SQLite in WAL mode) listens on a socket this script bound to
127.0.0.1 on a free port; a study is created through the admin API; N reader threads (httpx, one
client each, proxies ignored) each fill in the profile and then loop state -> image -> answer, exactly
like the reader page. Every `dup_every`-th answer is posted twice at the same instant from two
threads: exactly one must land. At the end the admin export is compared with what the clients sent:
no answer lost, none duplicated. Answer latency percentiles (client-side, ms) are printed.

Run:  NUMBA_CACHE_DIR=.cache/numba .venv/bin/python benchmarks/turing_load.py --readers 40 --answers 100
"""
import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ADMIN_TOKEN = "load-test-admin-token"


def make_study_images(folder, n_real, n_synthetic, side, seed=0):
    """Write `n_real` + `n_synthetic` JPEG fundus-like images of `side` x `side` pixels.

    "Real" ones are variants (flip, rotation, brightness, noise) of skimage's real fundus photo when
    `side` >= 256, otherwise of random noise; "synthetic" ones are the same with a colour shift.
    Only the server's handling is measured here, not how convincing the pictures are.
    """
    rng = np.random.default_rng(seed)
    base = None
    if side >= 256:
        from skimage.data import retina
        base = np.asarray(Image.fromarray(retina()).resize((side, side), Image.Resampling.BILINEAR))
    out = {}
    for kind, n in (("real", n_real), ("synthetic", n_synthetic)):
        d = Path(folder) / kind
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = base if base is not None else rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            img = np.rot90(img, int(rng.integers(4)))
            if rng.random() < 0.5:
                img = img[:, ::-1]
            gain = rng.uniform(0.8, 1.2, size=3) * (np.array([1.0, 0.9, 1.05]) if kind == "synthetic" else 1)
            img = np.clip(img * gain + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{kind}_{i:03d}.jpg", quality=92)
        out[kind] = d
    return out["real"], out["synthetic"]


class Server:
    """uvicorn subprocess serving `create_app(db_url, ...)` on a socket bound here (no port race)."""

    def __init__(self, db_url, store, data_root=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        fd = self.sock.fileno()
        code = ("import uvicorn\nfrom retina_fast.turing.app import create_app\n"
                f"app = create_app({db_url!r}, admin_token={ADMIN_TOKEN!r}, image_store={str(store)!r}, "
                f"data_root={None if data_root is None else str(data_root)!r})\n"
                f"uvicorn.run(app, fd={fd}, log_level='warning', access_log=False)\n")
        env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", ".cache/numba"))
        self.proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(fd,), env=env)

    def wait_ready(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base, timeout=2.0, trust_env=False) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with code {self.proc.returncode}")
                try:
                    if c.get("/favicon.ico").status_code == 204:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout} s")

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.sock.close()

    def __enter__(self):
        self.wait_ready()
        return self

    def __exit__(self, *exc):
        self.close()


def _reader(base, token, n_answers, dup_every, seed, stats, lock, timeout):
    """One reader's session; appends to `stats` under `lock`. Bounded: stops after 3 x n_answers loops."""
    rng = np.random.default_rng(seed)
    sent, lat, img_lat, errors, dup_ok, dup_refused = [], [], [], [], 0, 0
    with httpx.Client(base_url=base, timeout=timeout, trust_env=False) as c, \
            ThreadPoolExecutor(2) as pool:
        r = c.post(f"/api/reader/{token}/profile", json={"specialty": "retina", "years": 5})
        if r.status_code != 200:
            errors.append(f"profile {r.status_code}")
        for _ in range(3 * n_answers + 3):
            try:
                st = c.get(f"/api/reader/{token}/state").json()
                if st["done"]:
                    break
                t0 = time.perf_counter()
                im = c.get(f"/api/reader/{token}/image/{st['image_id']}")
                img_lat.append(time.perf_counter() - t0)
                if im.status_code != 200:
                    errors.append(f"image {im.status_code}")
                    continue
                body = {"image_id": st["image_id"], "answer": "real" if rng.random() < 0.5 else "synthetic",
                        "client_ms": float(rng.uniform(300, 5000))}
                url = f"/api/reader/{token}/answer"
                if dup_every and st["position"] % dup_every == 0:
                    # the same answer twice at once (double click, two tabs): one must land, one 409
                    t0 = time.perf_counter()
                    codes = sorted(f.result().status_code for f in [pool.submit(c.post, url, json=body)
                                                                    for _ in range(2)])
                    lat.append(time.perf_counter() - t0)
                    if codes == [200, 409]:
                        dup_ok += 1
                        sent.append((st["image_id"], body["answer"]))
                    else:
                        dup_refused += 1
                        errors.append(f"duplicate pair answered {codes}")
                        if 200 in codes:
                            sent.extend([(st["image_id"], body["answer"])] * codes.count(200))
                    continue
                t0 = time.perf_counter()
                r = c.post(url, json=body)
                lat.append(time.perf_counter() - t0)
                if r.status_code == 200:
                    sent.append((st["image_id"], body["answer"]))
                else:
                    errors.append(f"answer {r.status_code}")
            except (httpx.TransportError, ValueError, KeyError) as e:
                errors.append(f"{type(e).__name__}: {e}")
    with lock:
        stats.append({"token": token, "sent": sent, "lat": lat, "img_lat": img_lat, "errors": errors,
                      "dup_ok": dup_ok, "dup_bad": dup_refused})


def run_load(n_readers=40, n_answers=100, side=1024, dup_every=10, workdir=None, timeout=60.0, seed=0,
             max_wall_s=1800.0, verbose=True):
    """Run the load test; return a dict of counts and latency percentiles (ms).

    Parameters
    ----------
    n_readers : int
        Concurrent reader threads.
    n_answers : int
        Images in the study (every reader answers all of them).
    side : int
        Side in pixels of the generated source images (and of the stored copies, at most 1024).
    dup_every : int
        Every this many positions a reader posts its answer twice concurrently (0: never).
    workdir : str or Path or None
        Folder for images, database and store (default: a temporary folder, removed afterwards).
    timeout : float
        Per-request timeout in seconds.
    max_wall_s : float
        Give up waiting for reader threads after this many seconds (they are daemon threads).
    """
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="turing_load_")
        workdir = tmp.name
    work = Path(workdir)
    try:
        real, synth = make_study_images(work / "src", n_answers - n_answers // 2, n_answers // 2, side, seed)
        with Server(f"sqlite:///{work / 'turing.db'}", work / "store", data_root=work / "src") as srv, \
                httpx.Client(base_url=srv.base, timeout=max(timeout, 600.0), trust_env=False,
                             headers={"X-Admin-Token": ADMIN_TOKEN}) as admin:
            t0 = time.perf_counter()
            r = admin.post("/api/admin/studies", json={"name": "load", "real_dir": str(real),
                                                       "synthetic_dir": str(synth), "seed": seed})
            r.raise_for_status()
            sid = r.json()["study_id"]
            t_study = time.perf_counter() - t0
            readers = admin.post(f"/api/admin/studies/{sid}/readers", json={"count": n_readers}).json()
            stats, lock = [], threading.Lock()
            threads = [threading.Thread(target=_reader, args=(srv.base, rd["token"], n_answers, dup_every,
                                                               seed + 1 + k, stats, lock, timeout),
                                        daemon=True)
                       for k, rd in enumerate(readers)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            deadline = t0 + max_wall_s
            for t in threads:
                t.join(max(0.0, deadline - time.perf_counter()))  # bounded even if a thread hangs
            wall = time.perf_counter() - t0
            hung = sum(t.is_alive() for t in threads)
            rows = admin.get(f"/api/admin/studies/{sid}/export", params={"format": "json"}).json()
            rid = {rd["token"]: rd["reader_id"] for rd in readers}
    finally:
        if tmp is not None:
            tmp.cleanup()

    sent = [(rid[s["token"]], iid, ans) for s in stats for iid, ans in s["sent"]]
    got = [(x["reader_id"], x["image_id"], x["answer"]) for x in rows]
    lat = np.array([v for s in stats for v in s["lat"]]) * 1000
    img = np.array([v for s in stats for v in s["img_lat"]]) * 1000
    positions_ok = all(sorted(x["position"] for x in rows if x["reader_id"] == r) == list(range(n_answers))
                       for r in rid.values())
    res = {
        "readers": n_readers, "answers_per_reader": n_answers, "side": min(side, 1024),
        "answers_sent": len(sent), "answers_exported": len(got),
        "lost": len(set(sent) - set(got)), "unexpected": len(set(got) - set(sent)),
        "duplicated": len(got) - len(set((r, i) for r, i, _ in got)),
        "client_dup_sent": len(sent) - len(set(sent)),
        "complete": positions_ok and len(got) == n_readers * n_answers,
        "server_ms_min": min((x["server_ms"] for x in rows), default=None),
        "dup_pairs_ok": sum(s["dup_ok"] for s in stats), "dup_pairs_bad": sum(s["dup_bad"] for s in stats),
        "errors": [e for s in stats for e in s["errors"]], "hung_threads": hung,
        "wall_s": wall, "study_create_s": t_study, "answers_per_s": len(got) / wall if wall else 0.0,
        "answer_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "answer_p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
        "answer_p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
        "answer_max_ms": float(lat.max()) if lat.size else None,
        "image_p95_ms": float(np.percentile(img, 95)) if img.size else None,
    }
    if verbose:
        print(format_result(res))
    return res


def format_result(res):
    """Plain-text table of a :func:`run_load` result."""
    keys = ("readers", "answers_per_reader", "side", "answers_sent", "answers_exported", "lost", "unexpected",
            "duplicated", "complete", "server_ms_min", "dup_pairs_ok", "dup_pairs_bad", "hung_threads",
            "study_create_s", "wall_s", "answers_per_s", "answer_p50_ms", "answer_p95_ms", "answer_p99_ms",
            "answer_max_ms", "image_p95_ms")
    lines = [f"{k:<20} {res[k]:.1f}" if isinstance(res[k], float) else f"{k:<20} {res[k]}" for k in keys]
    lines.append(f"{'errors':<20} {len(res['errors'])} {res['errors'][:5]}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--readers", type=int, default=40)
    p.add_argument("--answers", type=int, default=100, help="images in the study = answers per reader")
    p.add_argument("--side", type=int, default=1024, help="source image side in pixels (default 1024)")
    p.add_argument("--dup-every", type=int, default=10, help="post every N-th answer twice at once (0: never)")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    res = run_load(a.readers, a.answers, a.side, a.dup_every, timeout=a.timeout, seed=a.seed)
    ok = (res["lost"] == res["unexpected"] == res["duplicated"] == res["hung_threads"] == 0 and res["complete"]
          and not res["errors"])
    print("OK: no answer lost or duplicated" if ok else "FAILED: see counts above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
