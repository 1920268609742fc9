// The Python module fused_gumbel._C. It holds no Python functions: importing it
// loads the shared library, whose static TORCH_LIBRARY blocks register the
// operators under torch.ops.fused_gumbel.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
