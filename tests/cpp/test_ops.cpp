// C++-level checks of the CPU kernels, without Python: each op is looked up through the
// dispatcher (as torch.ops.retina_fast.* would) and compared with a naive loop over float64.
// Exit status is the number of failed checks.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <string>

using at::Tensor;
using OptTensor = std::optional<Tensor>;

namespace {

// Signatures must match the kernels' C++ signatures exactly, or typed() refuses them.
using Upfirdn2dFn = Tensor(const Tensor&, const Tensor&, int64_t, int64_t, int64_t, int64_t, int64_t,
                           int64_t, int64_t, int64_t, bool, double);
using BiasActFn = Tensor(const Tensor&, const OptTensor&, int64_t, c10::string_view, double, double,
                         double);
using ModulateFn = Tensor(const Tensor&, const Tensor&, const OptTensor&, bool);

template <typename Fn>
c10::TypedOperatorHandle<Fn> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(20240611);
Tensor randn(at::IntArrayRef sizes) { return at::randn(sizes, gen, at::kDouble); }

double max_abs_diff(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes()) return INFINITY;
  const Tensor ac = a.contiguous(), bc = b.contiguous();
  const double *pa = ac.const_data_ptr<double>(), *pb = bc.const_data_ptr<double>();
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) m = std::fmax(m, std::fabs(pa[i] - pb[i]));
  return std::isnan(m) ? INFINITY : m;
}

// Zero insertion, pad (negative = crop), correlation with the flipped (unless flip_filter) and
// scaled filter, then keep every down-th sample: the StyleGAN2-ADA upfirdn2d_ref, elementwise.
Tensor upfirdn2d_naive(const Tensor& x, const Tensor& f, int64_t up, int64_t down, int64_t px0,
                       int64_t px1, int64_t py0, int64_t py1, bool flip_filter, double gain) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t fh = f.size(0), fw = f.size(1);
  const int64_t out_h = (H * up + py0 + py1 - fh) / down + 1;
  const int64_t out_w = (W * up + px0 + px1 - fw) / down + 1;
  auto xa = x.accessor<double, 4>();
  auto fa = f.accessor<double, 2>();
  Tensor y = at::zeros({N, C, out_h, out_w}, at::kDouble);
  auto ya = y.accessor<double, 4>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t oy = 0; oy < out_h; ++oy)
        for (int64_t ox = 0; ox < out_w; ++ox) {
          double acc = 0;
          for (int64_t ty = 0; ty < fh; ++ty)
            for (int64_t tx = 0; tx < fw; ++tx) {
              const int64_t uy = oy * down + ty - py0, ux = ox * down + tx - px0;  // upsampled
              if (uy < 0 || ux < 0 || uy >= H * up || ux >= W * up || uy % up || ux % up) continue;
              const double w = flip_filter ? fa[ty][tx] : fa[fh - 1 - ty][fw - 1 - tx];
              acc += w * gain * xa[n][c][uy / up][ux / up];
            }
          ya[n][c][oy][ox] = acc;
        }
  return y;
}

int failures = 0;

void check(const std::string& name, const std::function<double()>& max_err, double tol) {
  try {
    const double err = max_err();
    const bool ok = err <= tol;
    std::printf("%s %s: max abs err %.3g (tol %.0e)\n", ok ? "PASS" : "FAIL", name.c_str(), err, tol);
    failures += !ok;
  } catch (const c10::Error& e) {  // what() would append a multi-line backtrace
    std::printf("FAIL %s: %s\n", name.c_str(), e.what_without_backtrace());
    ++failures;
  } catch (const std::exception& e) {
    std::printf("FAIL %s: %s\n", name.c_str(), e.what());
    ++failures;
  }
}

}  // namespace

int main() {
  const double kTol = 1e-12;

  check("upfirdn2d up=2 down=1 pad=(1,2,0,-1)", [] {
    const Tensor x = randn({2, 3, 9, 11}), f = randn({3, 4});
    const Tensor y = op<Upfirdn2dFn>("retina_fast::upfirdn2d").call(x, f, 2, 2, 1, 1, 1, 2, 0, -1, false, 4.0);
    return max_abs_diff(y, upfirdn2d_naive(x, f, 2, 1, 1, 2, 0, -1, false, 4.0));
  }, kTol);

  check("upfirdn2d up=1 down=2 pad=(1,2,0,-1) flip_filter", [] {
    const Tensor x = randn({2, 3, 9, 11}), f = randn({3, 4});
    const Tensor y = op<Upfirdn2dFn>("retina_fast::upfirdn2d").call(x, f, 1, 1, 2, 2, 1, 2, 0, -1, true, 1.0);
    return max_abs_diff(y, upfirdn2d_naive(x, f, 1, 2, 1, 2, 0, -1, true, 1.0));
  }, kTol);

  check("bias_act lrelu alpha=0.2 gain=sqrt(2) clamp=0.5 dim=1", [] {
    const double alpha = 0.2, gain = std::sqrt(2.0), clamp = 0.5;
    const Tensor x = randn({2, 5, 4, 6}), b = randn({5});
    const Tensor y = op<BiasActFn>("retina_fast::bias_act").call(x, b, 1, "lrelu", alpha, gain, clamp);
    Tensor ref = at::zeros_like(x);
    auto xa = x.accessor<double, 4>();
    auto ra = ref.accessor<double, 4>();
    auto ba = b.accessor<double, 1>();
    for (int64_t n = 0; n < x.size(0); ++n)
      for (int64_t c = 0; c < x.size(1); ++c)
        for (int64_t h = 0; h < x.size(2); ++h)
          for (int64_t w = 0; w < x.size(3); ++w) {
            const double z = xa[n][c][h][w] + ba[c];
            ra[n][c][h][w] = std::fmin(std::fmax((z > 0 ? z : alpha * z) * gain, -clamp), clamp);
          }
    return max_abs_diff(y, ref);
  }, kTol);

  check("modulate noise [N,1,H,W]", [] {
    const Tensor x = randn({2, 3, 5, 7}), s = randn({2, 3}), noise = randn({2, 1, 5, 7});
    const Tensor y = op<ModulateFn>("retina_fast::modulate").call(x, s, noise, false);
    Tensor ref = at::zeros_like(x);
    auto xa = x.accessor<double, 4>();
    auto sa = s.accessor<double, 2>();
    auto na = noise.accessor<double, 4>();
    auto ra = ref.accessor<double, 4>();
    for (int64_t n = 0; n < x.size(0); ++n)
      for (int64_t c = 0; c < x.size(1); ++c)
        for (int64_t h = 0; h < x.size(2); ++h)
          for (int64_t w = 0; w < x.size(3); ++w)
            ra[n][c][h][w] = xa[n][c][h][w] * sa[n][c] + na[n][0][h][w];
    return max_abs_diff(y, ref);
  }, kTol);

  std::printf("%d check(s) failed\n", failures);
  return failures;
}
