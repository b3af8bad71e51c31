"""Synthetic colour fundus photographs with exact ground truth.

`make_fundus` renders a frame the way a 45-degree fundus camera writes it (1536 x 2048 by default):
black surround, circular field of view (FOV) clipped at top and bottom, orange-red fundus with
illumination fall-off and choroidal texture, a bright optic disc with a paler cup, a darker macula
with a foveal reflex, artery and vein trees leaving the disc in superior and inferior arcades that
curve around the macula, and sensor noise. ``disease='erm'`` adds an epiretinal membrane: a glossy,
semi-transparent sheen with faint radial striae over the macula and wavy (tortuous) vessels near the
fovea.

Coordinates are (row, col) pixels; pixel (r, c) has its centre at (r, c). Images are (H, W, 3)
uint8 RGB. Everything random comes from numpy Generators seeded by ``numpy.random.SeedSequence(seed)``
(one independent stream per part: geometry, vessels, background, texture, membrane, noise), so a seed
fixes the frame, and the same seed with and without ``disease='erm'`` gives the same eye (geometry,
background, vessel tree; under ERM the vessels near the fovea are wavy, which shifts their branches).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
from numba import njit
from scipy.ndimage import gaussian_filter

from ..checks import check_int, check_number

__all__ = ["FundusTruth", "VesselSegment", "make_fundus", "NOISE_SIGMA", "VESSEL_CONTRAST"]

# Defaults of `make_fundus`: sensor noise (grey levels) and the multiplier of the drawn vessel contrasts.
NOISE_SIGMA = 3.25
VESSEL_CONTRAST = 0.6


@dataclass
class VesselSegment:
    """One vessel segment between two branch points (or a branch point and a tip).

    Attributes
    ----------
    points : (K, 2) float64
        Centreline polyline, (row, col) px, sampled about every 1 px.
    width : float
        Full vessel width in px, constant along the segment.
    contrast : float
        Fractional darkening of the green channel inside the vessel:
        green_vessel = green_background * (1 - contrast).
    kind : str
        'artery' or 'vein'.
    parent : int
        Index of the parent segment in `FundusTruth.segments`, or -1 for a trunk leaving the disc.
        A child's first point lies on its parent's centreline (its last point).
    """

    points: np.ndarray
    width: float
    contrast: float
    kind: str
    parent: int


@dataclass
class FundusTruth:
    """Ground truth of a `make_fundus` frame. All positions are (row, col) px, lengths px.

    Attributes
    ----------
    vessel_mask : (H, W) bool
        Pixels within width/2 of a segment's centreline (and inside the FOV).
    segments : list of VesselSegment
        Artery and vein trees; parents come before their children.
    disc_center, disc_radius, cup_radius
        Optic disc (a slightly vertical oval; `disc_radius` is its nominal radius) and cup.
    fovea_center
        Centre of the fovea (darkest point of the macula, with a small bright reflex).
    fov_center, fov_radius
        Circular field of view; may extend beyond the frame (top/bottom; all sides when zoomed).
    label : {'normal', 'erm'}
    noise_sigma : float
        Std of the added Gaussian noise, grey levels.
    size : (H, W)
    clean : (H, W, 3) float32 or None
        Noise-free image (0-255 scale, before rounding and clipping) when requested.
    eye : {'R', 'L'}
        'R' when the disc lies right of the fovea in the image (a right eye as photographed).
    zoom, exposure : float
        The arguments the frame was made with.
    """

    vessel_mask: np.ndarray
    segments: list
    disc_center: tuple
    disc_radius: float
    cup_radius: float
    fovea_center: tuple
    fov_center: tuple
    fov_radius: float
    label: str
    noise_sigma: float
    size: tuple
    clean: np.ndarray | None = None
    eye: str = "R"
    zoom: float = 1.0
    exposure: float = 1.0

    def centerline_length(self, indices=None):
        """Total centreline length (px) of the segments `indices` (default all), on the mask only.

        A sub-segment counts when both its end points round to in-frame pixels of `vessel_mask`.
        Where vessels overlap (crossings, a branch leaving inside its parent's wall, neighbours
        running side by side) the union's skeleton sees one vessel: compare skeletons of one tree
        at a time (`trees`, `segment_mask`) with this length, not the whole image's.
        """
        h, w = self.vessel_mask.shape
        total = 0.0
        for i in range(len(self.segments)) if indices is None else indices:
            p = self.segments[i].points
            if len(p) < 2:
                continue
            r = np.rint(p[:, 0]).astype(np.int64)
            c = np.rint(p[:, 1]).astype(np.int64)
            inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
            on = np.zeros(len(p), bool)
            on[inside] = self.vessel_mask[r[inside], c[inside]]
            both = on[:-1] & on[1:]
            step = np.hypot(*np.diff(p, axis=0).T)
            total += float(step[both].sum())
        return total

    def trees(self):
        """Segment indices of each vessel tree (a root segment and all its descendants), roots in order."""
        root = []
        for i, seg in enumerate(self.segments):  # parents come before their children
            root.append(i if seg.parent < 0 else root[seg.parent])
        groups = {}
        for i, r in enumerate(root):
            groups.setdefault(r, []).append(i)
        return list(groups.values())

    def segment_mask(self, indices):
        """(H, W) bool mask of the segments `indices` alone, by the rule of `vessel_mask`."""
        segs = [self.segments[i] for i in indices]
        mask = np.zeros(self.vessel_mask.shape, bool)
        if segs:
            starts = np.zeros(len(segs) + 1, np.int64)
            starts[1:] = np.cumsum([len(sg.points) for sg in segs])
            ones = np.ones(len(segs))
            _render_vessels(np.concatenate([sg.points for sg in segs]), starts,
                            np.array([sg.width for sg in segs], np.float64), ones, ones, ones,
                            np.zeros(mask.shape + (3,), np.float32), mask)
        return mask & self.vessel_mask  # the FOV rim is cleared in vessel_mask


# ----------------------------------------------------------------------------------------------
# Vessel tree growth


_ARCADE, _FREE, _MACULAR = 0, 1, 2


@njit(cache=True)
def _wrap(a):
    return (a + math.pi) % (2.0 * math.pi) - math.pi


@njit(cache=True)
def _walk(y, x, h, n_steps, step, noise, sigma, mode, sense, steer,
          fov_r0, fov_c0, fov_rad, fov_margin, fov_r, fov_c, disc_r, disc_c,
          faz, arc_r, erm_amp, erm_sigma, erm_wavelength, erm_phase, height):
    """Walk one centreline from (y, x) with heading h (radians, direction (sin h, cos h)).

    Returns the visited points (n, 2) and a stop code: 0 length reached, 1 left the FOV or frame,
    2 entered the foveal avascular zone.
    """
    out = np.empty((n_steps + 1, 2))
    out[0, 0] = y
    out[0, 1] = x
    omega = 0.0
    phase = erm_phase
    code = 0
    n = 1
    a0 = math.atan2(disc_r - fov_r, disc_c - fov_c)   # angle of the disc seen from the fovea
    for k in range(n_steps):
        omega = 0.8 * omega + sigma * noise[k]
        h += omega
        vr = y - fov_r
        vc = x - fov_c
        rho = math.sqrt(vr * vr + vc * vc) + 1e-9
        if mode == _ARCADE:
            # tangent to a circle round the fovea, pulled towards radius arc_r; once past the top
            # of the macula the target radius grows so the arcade fans out temporally
            prog = abs(_wrap(math.atan2(vr, vc) - a0))   # 0 at the disc, pi/2 above/below the fovea
            target = arc_r * (1.0 + 1.2 * max(0.0, prog - 1.5))
            tr = -sense * vc / rho
            tc = sense * vr / rho
            g = 1.6 * (rho - target) / target
            dr = tr - g * vr / rho
            dc = tc - g * vc / rho
            gain = steer * max(0.0, 1.0 - max(0.0, prog - 1.9) / 0.6)
            h += gain * _wrap(math.atan2(dr, dc) - h)
        elif mode == _MACULAR:
            h += steer * _wrap(math.atan2(-vr, -vc) - h)
        else:
            # radiate from the disc
            h += steer * _wrap(math.atan2(y - disc_r, x - disc_c) - h)
        he = h
        if erm_amp > 0.0:
            # epiretinal membrane: heading oscillates near the fovea -> wavy vessels
            he = h + erm_amp * math.exp(-0.5 * (rho / erm_sigma) ** 2) * math.sin(phase)
            phase += 2.0 * math.pi * step / erm_wavelength
        y += step * math.sin(he)
        x += step * math.cos(he)
        out[n, 0] = y
        out[n, 1] = x
        n += 1
        fr = y - fov_r0
        fc = x - fov_c0
        if fr * fr + fc * fc > (fov_rad - fov_margin) ** 2 or y < -20.0 or y > height + 20.0:
            code = 1
            break
        qr = y - fov_r
        qc = x - fov_c
        if qr * qr + qc * qc < faz * faz:
            code = 2
            break
    return out[:n], h, code


def _densify(p):
    """Insert midpoints so that a 2-px walk is sampled about every 1 px."""
    q = np.empty((2 * len(p) - 1, 2))
    q[0::2] = p
    q[1::2] = 0.5 * (p[:-1] + p[1:])
    return q


def _contrast_factor(width, scale):
    return 0.35 + 0.65 * min(1.0, width / (16.0 * scale))


def _grow_vessels(rng, geo, erm):
    """Grow artery and vein trees from the disc. Returns a list of VesselSegment."""
    s = geo["scale"]
    dd = 2.0 * geo["disc_radius"]
    dr0, dc0 = geo["disc_center"]
    fr0, fc0 = geo["fovea_center"]
    nasal = geo["nasal"]               # +1: nasal side is +col (right eye as photographed)
    wmin = 3.0 * s
    step = 2.0
    faz = 0.35 * dd
    erm_amp = rng.uniform(0.45, 0.7)     # drawn either way so that normal and ERM share the tree
    erm_amp = erm_amp if erm else 0.0
    erm_sigma = 1.4 * dd
    erm_wavelength = rng.uniform(28.0, 45.0) * s
    temporal = math.atan2(0.0, -nasal)   # heading pointing temporally

    queue = []
    up, down = -math.pi / 2, math.pi / 2

    def tilt(base, towards, deg):
        return base + math.radians(deg) * (1 if _wrap(towards - base) > 0 else -1)

    # queue items: (heading, width px, contrast, kind, growth mode, arcade sense, parent index,
    # start point or None for a trunk, arcade radius)
    for sup in (True, False):
        base = up if sup else down
        sense = (1 if sup else -1) * nasal
        for kind, w, c in (("vein", rng.uniform(15.0, 19.0), rng.uniform(0.40, 0.50)),
                           ("artery", rng.uniform(11.0, 14.0), rng.uniform(0.24, 0.32))):
            hd = tilt(base, temporal, rng.uniform(5.0, 30.0))
            arc_r = rng.uniform(0.72, 0.88) * math.hypot(fr0 - dr0, fc0 - dc0)
            queue.append((hd, w * s, c, kind, _ARCADE, sense, -1, None, arc_r))
        for kind, w, c in (("vein", rng.uniform(10.0, 13.0), rng.uniform(0.36, 0.45)),
                           ("artery", rng.uniform(8.0, 10.0), rng.uniform(0.22, 0.30))):
            hd = tilt(base, temporal + math.pi, rng.uniform(25.0, 60.0))
            queue.append((hd, w * s, c, kind, _FREE, 0, -1, None, 0.0))
    for kind in ("artery", "vein")[: rng.integers(1, 3)]:
        hd = math.atan2(fr0 - dr0, fc0 - dc0) + rng.uniform(-0.35, 0.35)
        w, c = rng.uniform(5.0, 7.0) * s, rng.uniform(0.18, 0.28)
        queue.append((hd, w, c, kind, _MACULAR, 0, -1, None, 0.0))

    # widest first, so the segment cap only ever drops capillary-sized tips
    heap = []
    for item in queue:
        heapq.heappush(heap, (-item[1], len(heap), item))
    counter = len(heap)
    segments = []
    # fewer tips at low resolution, where a camera would not resolve them either
    max_segments = int(480 * min(1.0, 0.4 + 0.6 * s))
    while heap and len(segments) < max_segments:
        hd, w, c, kind, mode, sense, parent, start, arc_r = heapq.heappop(heap)[2]
        if start is None:
            # trunks emerge from the cup, a little off the disc centre
            ang = rng.uniform(0, 2 * math.pi)
            rad = rng.uniform(0.0, 0.3) * geo["cup_radius"]
            start = (dr0 + rad * math.sin(ang), dc0 + rad * math.cos(ang))
        terminal = w < wmin
        if terminal:
            w = wmin
            length = rng.uniform(60.0, 260.0) * s
        else:
            length = rng.uniform(0.5, 1.5) * (40.0 * s + 8.0 * w)
        n_steps = max(2, int(length / step))
        noise = rng.standard_normal(n_steps)
        sigma = (0.006 if mode == _ARCADE else 0.010) * (1.0 + 3.0 * s / (w + s))
        steer = {_ARCADE: 0.08, _MACULAR: 0.012, _FREE: 0.012}[mode]
        pts, h_end, code = _walk(
            float(start[0]), float(start[1]), float(hd), n_steps, step, noise, sigma, mode, float(sense),
            steer, geo["fov_center"][0], geo["fov_center"][1], geo["fov_radius"], w / 2 + 3.0,
            fr0, fc0, dr0, dc0, faz * min(3.0, 1.0 + 0.6 * max(0.0, w / wmin - 1.0)),  # wide ones stop early
            arc_r, erm_amp, erm_sigma, erm_wavelength,
            rng.uniform(0, 2 * math.pi), float(geo["size"][0]))
        if len(pts) < 2:
            continue
        idx = len(segments)
        segments.append(VesselSegment(_densify(pts), float(w), float(c), kind, parent))
        if code == 1 or terminal or (code == 2 and w < 1.5 * wmin):
            continue
        end = (float(pts[-1, 0]), float(pts[-1, 1]))
        if code == 2:
            # at the edge of the avascular zone a vessel forks into two thinner ones going round it
            alpha = rng.uniform(0.7, 1.0)
            w1 = w / (1.0 + alpha ** 3) ** (1.0 / 3.0)
            theta = math.radians(rng.uniform(60.0, 90.0))
            for wc, hc in ((w1, h_end + theta), (alpha * w1, h_end - theta)):
                counter += 1
                cc = c * _contrast_factor(max(wc, wmin), s) / _contrast_factor(w, s)
                heapq.heappush(heap, (-wc, counter, (hc, wc, cc, kind, _FREE, 0, idx, end, 0.0)))
            continue
        # bifurcation: Murray's law w^3 = w1^3 + w2^3 with an asymmetric split
        alpha = rng.uniform(0.35, 0.85)
        w1 = w / (1.0 + alpha ** 3) ** (1.0 / 3.0)
        w2 = alpha * w1
        side = 1.0 if rng.random() < 0.5 else -1.0
        theta = math.radians(rng.uniform(40.0, 75.0))
        # thinner vessels show less contrast on photographs
        c1 = c * _contrast_factor(w1, s) / _contrast_factor(w, s)
        c2 = c * _contrast_factor(max(w2, wmin), s) / _contrast_factor(w, s)
        counter += 1
        item = (h_end - side * 0.25 * theta, w1, c1, kind, mode, sense, idx, end, arc_r)
        heapq.heappush(heap, (-w1, counter, item))
        hs = h_end + side * theta
        # side branches of the arcades that point inwards feed the macula
        vr, vc = end[0] - fr0, end[1] - fc0
        inward = (math.sin(hs) * -vr + math.cos(hs) * -vc) > 0
        child_mode = _MACULAR if (mode == _ARCADE and inward) else _FREE
        counter += 1
        heapq.heappush(heap, (-w2, counter, (hs, w2, c2, kind, child_mode, 0, idx, end, 0.0)))
    return segments


@njit(cache=True)
def _render_vessels(points, starts, widths, contrasts, red_gain, blue_gain, dark, mask):
    """Darkening factors (H, W, 3) and mask (H, W) of thick anti-aliased polylines.

    Inside width/2 of a centreline the green darkening equals the segment's contrast; it falls to
    0 over the next pixel. Overlapping vessels take the larger darkening per channel.
    """
    height, width = mask.shape
    for s in range(len(widths)):
        half = 0.5 * widths[s]
        reach = half + 1.0
        cg = contrasts[s]
        cr = cg * red_gain[s]
        cb = cg * blue_gain[s]
        for i in range(starts[s], starts[s + 1] - 1):
            r0 = points[i, 0]
            c0 = points[i, 1]
            r1 = points[i + 1, 0]
            c1 = points[i + 1, 1]
            y0 = max(int(math.floor(min(r0, r1) - reach)), 0)
            y1 = min(int(math.ceil(max(r0, r1) + reach)), height - 1)
            x0 = max(int(math.floor(min(c0, c1) - reach)), 0)
            x1 = min(int(math.ceil(max(c0, c1) + reach)), width - 1)
            dr = r1 - r0
            dc = c1 - c0
            l2 = dr * dr + dc * dc
            for y in range(y0, y1 + 1):
                for x in range(x0, x1 + 1):
                    t = 0.0
                    if l2 > 0.0:
                        t = ((y - r0) * dr + (x - c0) * dc) / l2
                        t = min(1.0, max(0.0, t))
                    ey = r0 + t * dr - y
                    ex = c0 + t * dc - x
                    d = math.sqrt(ey * ey + ex * ex)
                    if d < reach:
                        cov = min(1.0, reach - d)
                        g = cg * cov
                        dark[y, x, 1] = max(dark[y, x, 1], g)
                        g = cr * cov
                        dark[y, x, 0] = max(dark[y, x, 0], g)
                        g = cb * cov
                        dark[y, x, 2] = max(dark[y, x, 2], g)
                        if d <= half:
                            mask[y, x] = True


# ----------------------------------------------------------------------------------------------
# Background


@njit(cache=True)
def _background(img, base, coarse, fine, amp, nfl, nfl_gain, texture, ic_r, ic_c, inv_r2, fall1, fall2):
    """Fundus background: base colour x radial illumination fall-off x (1 + choroidal texture)
    x (1 + nerve-fibre-layer reflex)."""
    height, width = img.shape[0], img.shape[1]
    for y in range(height):
        dy2 = (y - ic_r) ** 2
        for x in range(width):
            q = (dy2 + (x - ic_c) ** 2) * inv_r2
            sh = max(1.0 - fall1 * q - fall2 * q * q, 0.2)
            for ch in range(3):
                t = 1.0
                if texture:
                    t += amp[ch, 0] * coarse[y, x] + amp[ch, 1] * fine[y, x]
                    # the reflex is striated: modulated by the fine texture
                    t += nfl_gain[ch] * nfl[y, x] * max(0.0, 1.0 + 0.5 * fine[y, x])
                img[y, x, ch] = base[ch] * sh * t


@njit(cache=True)
def _finish(img, dark, mask, fov_r, fov_c, fov_radius, exposure, noise, sigma, out):
    """In place: img <- img * (1 - dark) * aperture * exposure (the clean image); out <- uint8 of
    img + sigma * noise, rounded and clipped. Also clears `mask` outside the FOV."""
    height, width = mask.shape
    use_noise = sigma > 0.0
    for y in range(height):
        dy2 = (y - fov_r) ** 2
        for x in range(width):
            r = math.sqrt(dy2 + (x - fov_c) ** 2)
            # circular aperture with a ~2 px soft edge, black outside
            a = min(1.0, max(0.0, (fov_radius - r) * 0.5 + 0.5)) * exposure
            if r > fov_radius - 1.0:
                mask[y, x] = False
            for ch in range(3):
                # round to float32 first, so that out is exactly the rounding of clean (+ noise)
                v = np.float64(np.float32(img[y, x, ch] * (1.0 - dark[y, x, ch]) * a))
                img[y, x, ch] = v
                if use_noise:
                    v += sigma * noise[y, x, ch]
                v = math.floor(v + 0.5)
                out[y, x, ch] = np.uint8(min(255.0, max(0.0, v)))


def _nerve_fibre_reflex(segments, shape, scale):
    """Soft bands (0..1) a few vessel widths wide along the major vessels, (H, W) float32.

    Rendered as thick polylines on a coarse grid, then blurred and upsampled.
    """
    cell = max(2.0, 8.0 * scale)
    major = [sg for sg in segments if sg.width >= 7.0 * scale]
    gh, gw = _coarse_shape(shape, cell)
    band = np.zeros((gh, gw, 3), np.float32)
    if major:
        pts = np.concatenate([sg.points[::4] / cell + 2.0 for sg in major])
        starts = np.zeros(len(major) + 1, np.int64)
        starts[1:] = np.cumsum([len(sg.points[::4]) for sg in major])
        ones = np.ones(len(major))
        widths = np.array([6.0 * sg.width / cell for sg in major])
        _render_vessels(pts, starts, widths, ones, ones, ones, band, np.zeros((gh, gw), np.bool_))
    return _upsample_smooth(np.ascontiguousarray(band[..., 1]), shape, cell, 2.0)


def _smooth_noise(rng, shape, cell, rel_sigma=0.9):
    """Unit-variance smooth random field of `shape`, correlation length ~ `cell` px.

    White noise on a coarse grid is blurred and upsampled in one go with separable Gaussian
    interpolation matrices (two BLAS products), which is far cheaper than blurring at full size.
    """
    gh, gw = _coarse_shape(shape, cell)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    field_ = _upsample_smooth(coarse, shape, cell, rel_sigma)
    sd = float(field_[:: max(1, shape[0] // 64), :: max(1, shape[1] // 64)].std()) + 1e-6
    return field_ / sd


def _coarse_shape(shape, cell):
    """Coarse grid for `_upsample_smooth`: node j sits at pixel (j - 2) * cell."""
    return int(math.ceil(shape[0] / cell)) + 4, int(math.ceil(shape[1] / cell)) + 4


def _linear_taps(n, g, cell):
    """Linear interpolation from a g-node grid (node j at pixel (j - 2) * cell) to n pixels:
    first node index (n,) and weights (n, 2)."""
    pos = np.clip(np.arange(n) / cell + 2.0, 0.0, g - 1.000001)
    first = np.floor(pos).astype(np.int64)
    frac = (pos - first).astype(np.float32)
    return first, np.stack([1.0 - frac, frac], axis=1)


@njit(cache=True)
def _resample(coarse, first_r, w_r, first_c, w_c, out):
    """out[y, x] = sum_ij w_r[y, i] w_c[x, j] coarse[first_r[y] + i, first_c[x] + j] (separable)."""
    g_cols = coarse.shape[1]
    rows = np.empty(g_cols, np.float32)
    for y in range(out.shape[0]):
        for j in range(g_cols):
            rows[j] = 0.0
        for i in range(w_r.shape[1]):
            wi = w_r[y, i]
            if wi != 0.0:
                src = first_r[y] + i
                for j in range(g_cols):
                    rows[j] += wi * coarse[src, j]
        for x in range(out.shape[1]):
            acc = np.float32(0.0)
            f = first_c[x]
            for j in range(w_c.shape[1]):
                acc += w_c[x, j] * rows[f + j]
            out[y, x] = acc


def _upsample_smooth(coarse, shape, cell, rel_sigma):
    """Blur a coarse grid (Gaussian, `rel_sigma` nodes) and resample it to `shape` px (bilinear).

    Blurring on the coarse grid and interpolating linearly costs 4 multiply-adds per output pixel;
    a numba loop rather than BLAS products, which would oversubscribe the cores when frames are
    rendered in parallel processes.
    """
    blurred = gaussian_filter(np.asarray(coarse, np.float32), rel_sigma, mode="nearest")
    first_r, w_r = _linear_taps(shape[0], coarse.shape[0], cell)
    first_c, w_c = _linear_taps(shape[1], coarse.shape[1], cell)
    out = np.empty(shape, np.float32)
    _resample(np.ascontiguousarray(blurred), first_r, w_r, first_c, w_c, out)
    return out


def _box(center, radius, shape):
    r0 = max(int(center[0] - radius), 0)
    r1 = min(int(center[0] + radius) + 1, shape[0])
    c0 = max(int(center[1] - radius), 0)
    c1 = min(int(center[1] + radius) + 1, shape[1])
    return r0, r1, c0, c1


def _grid(box):
    r0, r1, c0, c1 = box
    return (np.arange(r0, r1, dtype=np.float32)[:, None], np.arange(c0, c1, dtype=np.float32)[None, :])


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _check_args(seed, size, disease, zoom, exposure, noise_sigma, vessel_contrast):
    check_int("seed", seed)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) for v in size) or min(size) < 64):
        raise ValueError(f"size must be (H, W) ints >= 64, got {size!r}")
    if disease not in (None, "erm"):
        raise ValueError(f"disease must be None or 'erm', got {disease!r}")
    check_number("zoom", zoom, 0.3, 3.0)
    check_number("exposure", exposure, 0.0, 10.0, min_open=True)
    check_number("noise_sigma", noise_sigma, 0.0, 64.0)       # grey levels
    check_number("vessel_contrast", vessel_contrast, 0.0, 1.5)


@dataclass(frozen=True)
class _Light:
    """Radial illumination fall-off of the frame: 1 at `center`, ``1 - a q - b q^2`` (floor 0.2) at
    squared distance q in units of the FOV radius squared."""

    center: tuple
    fall: tuple
    fov_radius: float

    def over(self, box):
        """The fall-off over `box` (see `_box`), (h, w, 1) float32."""
        gy, gx = _grid(box)
        q = ((gy - self.center[0]) ** 2 + (gx - self.center[1]) ** 2) * np.float32(
            1.0 / (self.fov_radius * self.fov_radius))
        return np.maximum(1.0 - self.fall[0] * q - self.fall[1] * q * q, 0.2)[..., None]


def _draw_geometry(rng, height, width, zoom):
    """FOV circle, eye side, disc, cup and fovea: the `geo` dict `_grow_vessels` and the painters take."""
    s = min(height, width) / 1536.0 * zoom
    fov_radius = 0.5 * height * rng.uniform(1.03, 1.12) * zoom
    if zoom <= 1.0:
        fov_radius = min(fov_radius, 0.5 * width - 8.0 * s)
    max_dc = max(0.0, min(0.03 * width, 0.5 * width - fov_radius - 4.0)) if zoom <= 1.0 else 0.03 * width
    fov_center = (0.5 * (height - 1) + rng.uniform(-0.03, 0.03) * height,
                  0.5 * (width - 1) + rng.uniform(-max_dc, max_dc))
    nasal = 1 if rng.random() < 0.5 else -1        # +1: disc right of the fovea ('R' eye)
    # disc radius 0.062-0.075 of the FOV diameter (disc ~5.5-6.5 deg across in a 45 deg field;
    # skimage.data.retina() has 0.069)
    disc_radius = 2.0 * fov_radius * rng.uniform(0.062, 0.075)
    dd = 2.0 * disc_radius
    disc_off = rng.uniform(0.35, 0.45) * fov_radius
    disc_center = (fov_center[0] + rng.uniform(-0.06, 0.04) * fov_radius,
                   fov_center[1] + nasal * disc_off)
    fd = rng.uniform(2.3, 2.7) * dd
    drop = rng.uniform(0.1, 0.35) * dd               # the fovea lies a little below the disc
    fovea_center = (disc_center[0] + drop, disc_center[1] - nasal * math.sqrt(fd * fd - drop * drop))
    cup_radius = disc_radius * rng.uniform(0.3, 0.5)
    return {"scale": s, "disc_center": disc_center, "disc_radius": disc_radius, "cup_radius": cup_radius,
            "fovea_center": fovea_center, "fov_center": fov_center, "fov_radius": fov_radius,
            "nasal": nasal, "size": (height, width)}


def _draw_vessels(rng, geo, erm, vessel_contrast):
    """Grow the trees and render them: (segments, darkening (H, W, 3) float32, vessel mask (H, W))."""
    height, width = geo["size"]
    segments = _grow_vessels(rng, geo, erm)
    for sg in segments:
        sg.contrast *= float(vessel_contrast)
    # veins darken red more than arteries (arterial blood is redder); all darken blue strongly
    red_gain = np.where([sg.kind == "vein" for sg in segments], rng.uniform(0.30, 0.45, len(segments)),
                        rng.uniform(0.10, 0.2, len(segments)))
    blue_gain = rng.uniform(0.75, 0.95, len(segments))
    starts = np.zeros(len(segments) + 1, np.int64)
    starts[1:] = np.cumsum([len(sg.points) for sg in segments])
    points = np.concatenate([sg.points for sg in segments]) if segments else np.zeros((0, 2))
    dark = np.zeros((height, width, 3), np.float32)
    mask = np.zeros((height, width), bool)
    _render_vessels(points, starts, np.array([sg.width for sg in segments]),
                    np.array([sg.contrast for sg in segments]), red_gain, blue_gain, dark, mask)
    return segments, dark, mask


def _draw_background(rng, rng_tex, geo, segments, texture, illumination):
    """Base colour under the illumination fall-off with choroidal texture and nerve-fibre reflex:
    (image (H, W, 3) float32, its `_Light`)."""
    height, width = geo["size"]
    fov_center, fov_radius, s = geo["fov_center"], geo["fov_radius"], geo["scale"]
    base = np.array([rng.uniform(205, 232), rng.uniform(70, 95), rng.uniform(42, 64)], np.float32)
    ic = (fov_center[0] + rng.uniform(-0.1, 0.1) * fov_radius,
          fov_center[1] + rng.uniform(-0.1, 0.1) * fov_radius)
    fall = (rng.uniform(0.05, 0.12), rng.uniform(0.18, 0.26))
    fall = fall if illumination else (0.0, 0.0)
    # nerve fibre layer reflex along the arcades: strong in young eyes, absent in many old ones
    nfl_gain = np.array([0.03, 0.08, 0.1], np.float32) * max(0.0, rng.uniform(-0.3, 1.0))
    if texture:
        coarse = _smooth_noise(rng_tex, (height, width), 110.0 * s)
        fine = _smooth_noise(rng_tex, (height, width), 10.0 * s)
        amp = np.array([[0.015, 0.008], [0.025, 0.012], [0.025, 0.015]], np.float32)
        nfl = _nerve_fibre_reflex(segments, (height, width), s)
    else:
        coarse = fine = nfl = np.zeros((1, 1), np.float32)
        amp = np.zeros((3, 2), np.float32)
    img = np.empty((height, width, 3), np.float32)
    _background(img, base, coarse, fine, amp, nfl, nfl_gain, texture, ic[0], ic[1], 1.0 / fov_radius ** 2,
                fall[0], fall[1])
    return img, _Light(ic, fall, fov_radius)


def _draw_macula(rng, img, geo):
    """In place: broad darkening (macular pigment absorbs blue/green), deeper fovea, small reflex."""
    fovea_center, dd = geo["fovea_center"], 2.0 * geo["disc_radius"]
    box = _box(fovea_center, 2.0 * dd, img.shape[:2])
    depth = rng.uniform(0.8, 1.2)
    reflex_gain = rng.uniform(0.25, 0.45)
    if box[1] > box[0] and box[3] > box[2]:
        gy, gx = _grid(box)
        d2 = (gy - fovea_center[0]) ** 2 + (gx - fovea_center[1]) ** 2
        mac = np.exp(d2 * np.float32(-0.5 / (0.55 * dd) ** 2))
        fov_ = np.exp(d2 * np.float32(-0.5 / (0.12 * dd) ** 2))
        sub = img[box[0]:box[1], box[2]:box[3]]
        for ch, (m1, m2) in enumerate(((0.10, 0.12), (0.26, 0.2), (0.3, 0.2))):
            sub[..., ch] *= 1.0 - depth * (m1 * mac + m2 * fov_)
        reflex = np.exp(d2 * np.float32(-0.5 / (0.018 * dd + 1.0) ** 2)) * reflex_gain
        sub += reflex[..., None] * (np.array([255.0, 230.0, 200.0], np.float32) - sub)


def _draw_disc(rng, rng_tex, img, geo, light):
    """In place: the optic disc, a slightly vertical oval: yellow-orange rim paler temporally, whitish
    cup, soft edge with a faint glow, mottled; sometimes a peripapillary atrophy crescent temporally."""
    disc_center, disc_radius, nasal = geo["disc_center"], geo["disc_radius"], geo["nasal"]
    box = _box(disc_center, 1.8 * disc_radius, img.shape[:2])
    ry, rx = disc_radius * rng.uniform(1.0, 1.1), disc_radius * rng.uniform(0.9, 1.0)
    rim = np.array([250.0, rng.uniform(165, 190), rng.uniform(95, 125)], np.float32)
    cupc = np.array([255.0, rng.uniform(235, 250), rng.uniform(190, 215)], np.float32)
    glow_gain = rng.uniform(0.15, 0.3)
    crescent = rng.uniform(0.25, 0.5) if rng.random() < 0.35 else 0.0
    crescent_col = np.array([rng.uniform(120, 190), rng.uniform(85, 130), rng.uniform(60, 90)], np.float32)
    if not (box[1] > box[0] and box[3] > box[2]):
        return
    gy, gx = _grid(box)
    ny, nx = (gy - disc_center[0]) / ry, (gx - disc_center[1]) / rx
    ed = np.sqrt(ny * ny + nx * nx)
    alpha = _smoothstep((1.0 - ed) / 0.1 + 0.5)
    cc = (disc_center[0], disc_center[1] - nasal * 0.15 * disc_radius)   # cup sits temporally
    cd = np.sqrt((gy - cc[0]) ** 2 + (gx - cc[1]) ** 2) / geo["cup_radius"]
    cup = _smoothstep((1.0 - cd) / 0.6 + 0.5)[..., None]
    temporal_side = np.clip(0.5 - 0.5 * nasal * nx, 0.0, 1.0)[..., None]   # 1 at the temporal margin
    mottle = 1.0 + 0.04 * _smooth_noise(rng_tex, ed.shape, 0.15 * disc_radius)[..., None]
    col = (rim * (1.0 - 0.3 * temporal_side) + cupc * 0.3 * temporal_side) * (1.0 - cup) + cupc * cup
    sub = img[box[0]:box[1], box[2]:box[3]]
    local = light.over(box)
    sub += alpha[..., None] * (col * mottle * local - sub)
    glow = (glow_gain * np.exp(-0.5 * ((ed - 1.0) / 0.18) ** 2) * (ed > 1.0))[..., None]
    sub += glow * (rim * local - sub)
    if crescent > 0:
        band = np.exp(-0.5 * ((ed - 1.12) / 0.09) ** 2) * temporal_side[..., 0] ** 2
        band *= np.clip(1.0 + 0.5 * _smooth_noise(rng_tex, ed.shape, 0.1 * disc_radius), 0.0, 2.0)
        sub += (crescent * band)[..., None] * (crescent_col * local - sub)


def _draw_membrane(rng, img, geo, light):
    """In place: an epiretinal membrane, a glistening semi-transparent sheen over the macula,
    irregular, with faint radial striae."""
    fovea_center, dd = geo["fovea_center"], 2.0 * geo["disc_radius"]
    rad = rng.uniform(1.1, 1.6) * dd
    box_r = 2.0 * rad
    box = _box(fovea_center, box_r, img.shape[:2])
    if not (box[1] > box[0] and box[3] > box[2]):
        return
    gy, gx = _grid(box)
    vy, vx = gy - np.float32(fovea_center[0]), gx - np.float32(fovea_center[1])
    d = np.sqrt(vy * vy + vx * vx)
    theta = np.arctan2(vy, vx)
    # irregular outline: super-Gaussian whose radius wobbles with a smooth random field,
    # tapered to 0 before the box edge
    blob = np.clip(_smooth_noise(rng, d.shape, 0.5 * rad), -2.5, 2.5)
    u = d / (rad * (1.0 + 0.15 * blob))
    u *= u
    env = np.exp(-0.5 * u * u) * _smoothstep((box_r - d) / (0.3 * rad))
    k = int(rng.integers(30, 60))
    wob = 1.2 * _smooth_noise(rng, d.shape, 0.4 * rad)
    c = 0.5 + 0.5 * np.cos(k * theta + wob)
    c *= c
    striae = c * c * c
    striae *= np.clip((d - 0.2 * rad) / (0.4 * rad), 0.0, 1.0)
    # folds come and go around the fovea rather than forming a perfect starburst
    striae *= np.clip(0.6 + 0.6 * _smooth_noise(rng, d.shape, 0.25 * rad), 0.0, 1.6)
    glint = np.clip(_smooth_noise(rng, d.shape, 0.15 * rad) - 1.0, 0.0, None)
    strength = rng.uniform(0.2, 0.3)
    a = np.clip(strength * env * (0.75 + 0.25 * striae + 0.5 * glint), 0.0, 0.7)
    sub = img[box[0]:box[1], box[2]:box[3]]
    sheen = np.array([250.0, 225.0, 205.0], np.float32) * np.maximum(light.over(box), 0.7)
    sub += a[..., None] * (sheen - sub)


def make_fundus(seed, *, size=(1536, 2048), disease=None, zoom=1.0, exposure=1.0, noise_sigma=NOISE_SIGMA,
                vessel_contrast=VESSEL_CONTRAST, texture=True, illumination=True, return_clean=False):
    """Render a synthetic colour fundus frame and its ground truth.

    Parameters
    ----------
    seed : int
        Seed of ``numpy.random.SeedSequence``; the frame is a pure function of the arguments.
    size : (int, int)
        Frame size (H, W) px. Anatomy and vessel widths scale with min(H, W) / 1536.
    disease : None or 'erm'
        'erm' adds an epiretinal membrane: glossy sheen with radial striae over the macula and
        wavy vessels near the fovea. ``truth.label`` is 'normal' or 'erm'.
    zoom : float
        Magnification. 1 gives a FOV diameter of 1.03-1.12 x H (clipped at top and bottom, inside
        left/right); >= 1.4 makes the FOV leave a 3:4 frame at left and right too (a 'zoomed' frame).
        Anatomy (disc, vessel widths) is magnified with it.
    exposure : float
        Brightness multiplier: < 0.35 gives a dark frame, > 2.5 a saturated one.
    noise_sigma : float
        Std of the Gaussian sensor noise per channel, grey levels (0-255).
    vessel_contrast : float
        Multiplier of every vessel's drawn contrast (`VesselSegment.contrast` holds the product; the
        tree itself does not depend on it). The defaults of this and `noise_sigma` put the zone-B SNR
        of the frames as `prepare` writes them (1024 x 1024; `retina_fast.vessels.zone_b_snr`, both
        kinds) in the range measured on the real photograph ``skimage.data.retina()`` (README, "The
        paper's SNR scale"); 1.0 gives the stronger contrasts drawn before.
    texture, illumination : bool
        Background texture (choroidal pattern and nerve fibre layer reflex) and radial illumination
        fall-off on/off. Off, the background away from disc and macula is one flat colour.
    return_clean : bool
        Also return the noise-free float32 (H, W, 3) image (0-255, before rounding/clipping) as
        ``truth.clean``.

    Returns
    -------
    image : (H, W, 3) uint8
        RGB frame.
    truth : FundusTruth
        Vessel mask and centrelines, disc, cup, fovea, FOV circle, label.
    """
    _check_args(seed, size, disease, zoom, exposure, noise_sigma, vessel_contrast)
    height, width = int(size[0]), int(size[1])
    rng_geo, rng_ves, rng_bg, rng_tex, rng_erm, rng_noise = (
        np.random.default_rng(ss) for ss in np.random.SeedSequence(int(seed)).spawn(6))
    geo = _draw_geometry(rng_geo, height, width, zoom)
    segments, dark, mask = _draw_vessels(rng_ves, geo, disease == "erm", vessel_contrast)
    # the background stream is drawn from in this order: base and light, macula, disc
    img, light = _draw_background(rng_bg, rng_tex, geo, segments, texture, illumination)
    _draw_macula(rng_bg, img, geo)
    _draw_disc(rng_bg, rng_tex, img, geo, light)
    if disease == "erm":
        _draw_membrane(rng_erm, img, geo, light)

    # vessels darken multiplicatively (after the sheen, so green = background * (1 - contrast)),
    # then the aperture, exposure and sensor noise
    noise = (rng_noise.standard_normal(img.shape, dtype=np.float32) if noise_sigma > 0
             else np.zeros((1, 1, 1), np.float32))
    image = np.empty((height, width, 3), np.uint8)
    fov_center, fov_radius = geo["fov_center"], geo["fov_radius"]
    _finish(img, dark, mask, fov_center[0], fov_center[1], fov_radius, exposure, noise, noise_sigma, image)

    truth = FundusTruth(vessel_mask=mask, segments=segments, disc_center=tuple(map(float, geo["disc_center"])),
                        disc_radius=float(geo["disc_radius"]), cup_radius=float(geo["cup_radius"]),
                        fovea_center=tuple(map(float, geo["fovea_center"])),
                        fov_center=tuple(map(float, fov_center)), fov_radius=float(fov_radius),
                        label="erm" if disease == "erm" else "normal", noise_sigma=float(noise_sigma),
                        size=(height, width), clean=img if return_clean else None,
                        eye="R" if geo["nasal"] > 0 else "L", zoom=float(zoom), exposure=float(exposure))
    return image, truth
