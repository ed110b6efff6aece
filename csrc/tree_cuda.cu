// mcts._core_cuda: the tree operations of csrc/tree.h on the device, one thread per tree.
//
// Arrays stay on the device: every function takes raw device pointers as Python ints, in the
// order of mcts/core/native.py `_device_args` (B, C, then the 12 Forest arrays), followed by the
// operation's own pointers and sizes exactly as `_CudaOps` passes them. The pointers are checked
// (shape, dtype, contiguity) on the Python side. Each call launches on the legacy default stream,
// synchronizes, and raises RuntimeError on a CUDA error.
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "tree.h"

namespace py = pybind11;

namespace {

constexpr int kThreadsPerBlock = 128;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear a sticky launch error so the next call starts clean
    throw std::runtime_error(std::string("mcts._core_cuda.") + what + ": " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
  }
}

unsigned int num_blocks(int64_t B) { return (unsigned int)((B + kThreadsPerBlock - 1) / kThreadsPerBlock); }

// Makes the device that owns `ptr` current for the scope (torch tensors may live on cuda:1).
class DeviceGuard {
 public:
  explicit DeviceGuard(uintptr_t ptr) {
    cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, reinterpret_cast<void*>(ptr)) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged) return;
    if (cudaGetDevice(&previous_) != cudaSuccess || previous_ == attr.device) return;
    if (cudaSetDevice(attr.device) == cudaSuccess) switched_ = true;
  }
  ~DeviceGuard() {
    if (switched_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool switched_ = false;
};

ts::Forest make_forest(int64_t B, int64_t C, uintptr_t parent, uintptr_t first_child, uintptr_t num_children,
                       uintptr_t visits, uintptr_t value_sum, uintptr_t prior, uintptr_t reward,
                       uintptr_t virtual_loss, uintptr_t depth, uintptr_t flags, uintptr_t num_nodes,
                       uintptr_t full) {
  if (B < 0) throw py::value_error("B must be >= 0, got " + std::to_string(B));
  if (C < 1 || C > INT32_MAX) throw py::value_error("capacity C must be in [1, 2^31), got " + std::to_string(C));
  return ts::Forest{reinterpret_cast<int32_t*>(parent),    reinterpret_cast<int32_t*>(first_child),
                    reinterpret_cast<int32_t*>(num_children), reinterpret_cast<int32_t*>(visits),
                    reinterpret_cast<double*>(value_sum),  reinterpret_cast<float*>(prior),
                    reinterpret_cast<float*>(reward),      reinterpret_cast<int32_t*>(virtual_loss),
                    reinterpret_cast<int16_t*>(depth),     reinterpret_cast<uint8_t*>(flags),
                    reinterpret_cast<int32_t*>(num_nodes), reinterpret_cast<uint8_t*>(full),
                    B,                                     (int32_t)C};
}

void check_size(int64_t n, const char* name) {
  if (n < 0 || n > INT32_MAX) throw py::value_error(std::string(name) + " must be in [0, 2^31), got " + std::to_string(n));
}

// Launch, then wait for the kernel and report any error (launch or execution) as RuntimeError.
template <typename Launch>
void run(const char* what, const ts::Forest& f, const Launch& launch) {
  if (f.num_trees == 0) return;
  DeviceGuard guard(reinterpret_cast<uintptr_t>(f.parent));
  py::gil_scoped_release release;
  launch();
  check(cudaGetLastError(), what);
  check(cudaStreamSynchronize(0), what);
}

// ---------------------------------------------------------------------------------------------
// kernels: thread b runs tree b

__global__ void select_kernel(ts::Forest f, int32_t* out, int32_t L, int rule, double c, double vl_weight) {
  const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= f.num_trees) return;
  ts::select_tree(f.tree(b), out + b * L, L, rule, c, vl_weight);
}

__global__ void expand_kernel(ts::Forest f, const int32_t* leaves, const int32_t* counts, const float* priors,
                              const float* rewards, const uint8_t* terminal, int32_t* out, int32_t L, int32_t K) {
  const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= f.num_trees) return;
  const int64_t row = b * L, block = b * L * K;
  ts::expand_tree(f.tree(b), leaves + row, counts + row, priors + block, rewards + block, terminal + block, out + row,
                  L, K);
}

__global__ void backup_kernel(ts::Forest f, const int32_t* leaves, const double* values, int32_t L, int rule) {
  const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= f.num_trees) return;
  ts::backup_tree(f.tree(b), leaves + b * L, values + b * L, L, rule);
}

__global__ void best_path_kernel(ts::Forest f, int32_t* out, int32_t D, int by) {
  const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= f.num_trees) return;
  ts::best_path_tree(f.tree(b), out + b * D, D, by);
}

__global__ void terminal_nodes_kernel(ts::Forest f, int32_t* out, int32_t T) {
  const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= f.num_trees) return;
  ts::terminal_nodes_tree(f.tree(b), out + b * T, T);
}

__global__ void max_terminal_count_kernel(ts::Forest f, int32_t* result) {
  const int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= f.num_trees) return;
  const int32_t count = ts::count_terminals(f.tree(b));
  if (count > 0) atomicMax(result, count);
}

// ---------------------------------------------------------------------------------------------
// bindings

#define FOREST_PARAMS                                                                                          \
  int64_t B, int64_t C, uintptr_t parent, uintptr_t first_child, uintptr_t num_children, uintptr_t visits,     \
      uintptr_t value_sum, uintptr_t prior, uintptr_t reward, uintptr_t virtual_loss, uintptr_t depth,         \
      uintptr_t flags, uintptr_t num_nodes, uintptr_t full

#define FOREST_ARGS \
  B, C, parent, first_child, num_children, visits, value_sum, prior, reward, virtual_loss, depth, flags, num_nodes, full

#define FOREST_PY_ARGS                                                                                          \
  py::arg("B"), py::arg("C"), py::arg("parent"), py::arg("first_child"), py::arg("num_children"),               \
      py::arg("visits"), py::arg("value_sum"), py::arg("prior"), py::arg("reward"), py::arg("virtual_loss"),    \
      py::arg("depth"), py::arg("flags"), py::arg("num_nodes"), py::arg("full")

int py_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error here
    return 0;
  }
  return count;
}

void py_select(FOREST_PARAMS, uintptr_t out, int64_t leaves_per_tree, int rule, double c, double virtual_loss_weight) {
  const ts::Forest f = make_forest(FOREST_ARGS);
  check_size(leaves_per_tree, "select: leaves_per_tree");
  if (!ts::valid_select_rule(rule)) throw py::value_error("select: unknown rule code " + std::to_string(rule));
  const int32_t L = (int32_t)leaves_per_tree;
  run("select", f, [&] {
    select_kernel<<<num_blocks(B), kThreadsPerBlock>>>(f, reinterpret_cast<int32_t*>(out), L, rule, c,
                                                       virtual_loss_weight);
  });
}

void py_expand(FOREST_PARAMS, uintptr_t leaves, uintptr_t counts, uintptr_t priors, uintptr_t rewards, uintptr_t terminal,
            uintptr_t out, int64_t L, int64_t K) {
  const ts::Forest f = make_forest(FOREST_ARGS);
  check_size(L, "expand: L");
  check_size(K, "expand: K");
  run("expand", f, [&] {
    expand_kernel<<<num_blocks(B), kThreadsPerBlock>>>(
        f, reinterpret_cast<const int32_t*>(leaves), reinterpret_cast<const int32_t*>(counts),
        reinterpret_cast<const float*>(priors), reinterpret_cast<const float*>(rewards),
        reinterpret_cast<const uint8_t*>(terminal), reinterpret_cast<int32_t*>(out), (int32_t)L, (int32_t)K);
  });
}

void py_backup(FOREST_PARAMS, uintptr_t leaves, uintptr_t values, int64_t L, int rule) {
  const ts::Forest f = make_forest(FOREST_ARGS);
  check_size(L, "backup: L");
  if (!ts::valid_backup_rule(rule)) throw py::value_error("backup: unknown rule code " + std::to_string(rule));
  run("backup", f, [&] {
    backup_kernel<<<num_blocks(B), kThreadsPerBlock>>>(f, reinterpret_cast<const int32_t*>(leaves),
                                                       reinterpret_cast<const double*>(values), (int32_t)L, rule);
  });
}

void py_best_path(FOREST_PARAMS, uintptr_t out, int64_t depth_out, int by) {
  const ts::Forest f = make_forest(FOREST_ARGS);
  check_size(depth_out, "best_path: depth");
  if (!ts::valid_best_path_key(by)) throw py::value_error("best_path: unknown key code " + std::to_string(by));
  run("best_path", f, [&] {
    best_path_kernel<<<num_blocks(B), kThreadsPerBlock>>>(f, reinterpret_cast<int32_t*>(out), (int32_t)depth_out, by);
  });
}

void py_terminal_nodes(FOREST_PARAMS, uintptr_t out, int64_t count) {
  const ts::Forest f = make_forest(FOREST_ARGS);
  check_size(count, "terminal_nodes: count");
  run("terminal_nodes", f, [&] {
    terminal_nodes_kernel<<<num_blocks(B), kThreadsPerBlock>>>(f, reinterpret_cast<int32_t*>(out), (int32_t)count);
  });
}

int py_max_terminal_count(FOREST_PARAMS) {
  const ts::Forest f = make_forest(FOREST_ARGS);
  if (f.num_trees == 0) return 0;
  DeviceGuard guard(parent);
  int32_t host = 0;
  {
    py::gil_scoped_release release;
    int32_t* result = nullptr;
    check(cudaMalloc(&result, sizeof(int32_t)), "max_terminal_count");
    cudaError_t err = cudaMemset(result, 0, sizeof(int32_t));
    if (err == cudaSuccess) {
      max_terminal_count_kernel<<<num_blocks(B), kThreadsPerBlock>>>(f, result);
      err = cudaGetLastError();
    }
    if (err == cudaSuccess) err = cudaMemcpy(&host, result, sizeof(int32_t), cudaMemcpyDeviceToHost);
    cudaFree(result);
    check(err, "max_terminal_count");
  }
  return host;
}

int py_runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

}  // namespace

PYBIND11_MODULE(_core_cuda, m) {
  m.doc() = "Batched MCTS tree operations on device Forest arrays (CUDA, one thread per tree). "
            "Semantics: mcts/core/reference.py. Called through mcts.core.native._CudaOps.";
  m.attr("__version__") = "0.1.0";
  m.def("device_count", &py_device_count, "Visible CUDA devices; 0 (never an error) without a driver or a GPU.");
  m.def("runtime_version", &py_runtime_version, "The CUDA runtime version this module was built with, e.g. 13000.");
  m.def("select", &py_select, FOREST_PY_ARGS, py::arg("out"), py::arg("leaves_per_tree"), py::arg("rule"), py::arg("c"),
        py::arg("virtual_loss_weight"),
        "Select up to leaves_per_tree leaves per tree into out (int32 [B, L]). rule: 0 uct, 1 puct, 2 mcts_star.");
  m.def("expand", &py_expand, FOREST_PY_ARGS, py::arg("leaves"), py::arg("counts"), py::arg("priors"),
        py::arg("rewards"), py::arg("terminal"), py::arg("out"), py::arg("L"), py::arg("K"),
        "Allocate counts[b, l] children under leaves[b, l]; out: first child ids (int32 [B, L]).");
  m.def("backup", &py_backup, FOREST_PY_ARGS, py::arg("leaves"), py::arg("values"), py::arg("L"), py::arg("rule"),
        "Back values (float64 [B, L]) up from leaves (int32 [B, L]). rule: 0 mean, 1 max, 2 quality.");
  m.def("best_path", &py_best_path, FOREST_PY_ARGS, py::arg("out"), py::arg("depth"), py::arg("by"),
        "Best root-to-node path per tree into out (int32 [B, depth]). by: 0 visits, 1 q, 2 reward.");
  m.def("terminal_nodes", &py_terminal_nodes, FOREST_PY_ARGS, py::arg("out"), py::arg("count"),
        "Terminal node ids per tree into out (int32 [B, count]), -1 padded.");
  m.def("max_terminal_count", &py_max_terminal_count, FOREST_PY_ARGS,
        "The largest number of terminal nodes in one tree (the T of terminal_nodes).");
}
