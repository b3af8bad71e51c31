"""Quick self-check: every native op agrees with its reference on random inputs (values and
gradients). Returns a list of (name, max abs error, passed) rows."""
import torch

from .bias_act import ACTIVATIONS, bias_act
from .modconv import modulated_conv2d
from .upfirdn2d import setup_filter, upfirdn2d


def _compare(name, fn, inputs, tol):
    ins_n = [t.detach().clone().requires_grad_(True) for t in inputs]
    ins_r = [t.detach().clone().requires_grad_(True) for t in inputs]
    y_n, y_r = fn(*ins_n, impl="native"), fn(*ins_r, impl="ref")
    dy = torch.randn_like(y_r)
    g_n = torch.autograd.grad(y_n, ins_n, dy)
    g_r = torch.autograd.grad(y_r, ins_r, dy)
    err = max([(y_n - y_r).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(g_n, g_r)])
    return name, err, err <= tol


def run_selfcheck(device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)  # noqa: E731
    tol = 1e-9 if dtype == torch.float64 else 1e-3
    f = setup_filter([1, 3, 3, 1], device=device).to(dtype)
    rows = []
    for up, down, pad in [(2, 1, [2, 1]), (1, 2, [1, 1]), (3, 2, [1, 2, 0, -1])]:
        rows.append(_compare(f"upfirdn2d up={up} down={down} pad={pad}",
                             lambda x, impl: upfirdn2d(x, f, up=up, down=down, padding=pad, impl=impl),
                             [rnd(2, 3, 17, 19)], tol))
    for act in ACTIVATIONS:
        rows.append(_compare(f"bias_act {act} clamp=2",
                             lambda x, b, impl: bias_act(x, b, act=act, clamp=2.0, impl=impl),
                             [rnd(2, 5, 6, 7), rnd(5)], tol))
    for up, down in [(1, 1), (2, 1), (1, 2)]:
        rows.append(_compare(f"modulated_conv2d up={up} down={down}",
                             lambda x, w, s, impl: modulated_conv2d(x, w, s, up=up, down=down, padding=1,
                                                                    resample_filter=f, impl=impl),
                             [rnd(2, 6, 12, 12), rnd(7, 6, 3, 3), rnd(2, 6)], tol))
    return rows
