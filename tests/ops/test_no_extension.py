"""Without the compiled extension, import still works, warns once, and ops use the reference."""
import subprocess
import sys
import textwrap


def test_import_without_extension_falls_back_to_reference():
    code = textwrap.dedent("""
        import sys, warnings
        sys.modules["retina_fast._C"] = None   # makes `from .. import _C` raise ImportError
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import retina_fast
            import retina_fast.ops as ops
            import torch
            x = torch.randn(1, 2, 8, 8)
            f = ops.setup_filter([1, 3, 3, 1])
            y = ops.upsample2d(x, f)
            z = ops.bias_act(x, torch.zeros(2), act="lrelu")
            y2 = ops.upsample2d(x, f)
        native_warnings = [w for w in caught if "native extension is not built" in str(w.message)]
        assert len(native_warnings) == 1, [str(w.message) for w in caught]
        assert not ops.NATIVE_AVAILABLE and y.shape == (1, 2, 16, 16)
        torch.testing.assert_close(y, ops.upsample2d(x, f, impl="ref"))
        try:
            ops.upsample2d(x, f, impl="native")
        except RuntimeError as e:
            assert "impl='native'" in str(e) and "not built" in str(e), e
        else:
            raise AssertionError("impl='native' must fail without the extension")
        print("OK")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
