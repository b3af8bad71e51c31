// The retina_fast operator library: every schema is declared here, once. Kernels register
// themselves per backend (cpu/, cuda/); autograd and fake (meta) implementations are registered
// from Python (retina_fast/ops/*.py), beside each op's pure-PyTorch reference.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(retina_fast, m) {
  m.def("upfirdn2d(Tensor x, Tensor f, int up_x, int up_y, int down_x, int down_y, "
        "int pad_x0, int pad_x1, int pad_y0, int pad_y1, bool flip_filter, float gain) -> Tensor");
  // upfirdn2d followed by modulate, in one pass (CPU): y = upfirdn2d(x) * s[n, c] + noise. Its
  // backward takes the adjoint upfirdn2d's parameters: dx = s * adjoint(dy), ds = sum(adjoint(dy) * x).
  m.def("upfirdn2d_modulate(Tensor x, Tensor f, int up_x, int up_y, int down_x, int down_y, "
        "int pad_x0, int pad_x1, int pad_y0, int pad_y1, bool flip_filter, float gain, Tensor s, "
        "Tensor? noise) -> Tensor");
  m.def("upfirdn2d_modulate_backward(Tensor dy, Tensor x, Tensor f, int up_x, int up_y, int down_x, "
        "int down_y, int pad_x0, int pad_x1, int pad_y0, int pad_y1, bool flip_filter, float gain, "
        "Tensor s, bool need_dx, bool need_ds) -> (Tensor?, Tensor?)");
  m.def("bias_act(Tensor x, Tensor? b, int dim, str act, float alpha, float gain, float clamp) "
        "-> Tensor");
  m.def("bias_act_grad(Tensor dy, Tensor x, Tensor? b, int dim, str act, float alpha, float gain, "
        "float clamp) -> Tensor");
  m.def("modulate(Tensor x, Tensor s, Tensor? noise, bool channels_last=False) -> Tensor");
  m.def("modulate_backward(Tensor dy, Tensor x, Tensor s, bool need_dx, bool need_ds) "
        "-> (Tensor?, Tensor?)");
}

// Importing retina_fast._C runs the static registrations above; the module itself is empty.
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
