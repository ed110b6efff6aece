// mcts._core: the tree operations of csrc/tree.h on the host, OpenMP-parallel over trees.
//
// Every function works IN PLACE on the Forest's NumPy arrays, passed in the order of
// mcts/core/native.py `_host_args`. Array arguments are `noconvert`: a wrong dtype or a
// non-contiguous array raises TypeError instead of being silently copied (a copy would take the
// update with it). Shapes are checked once here; the per-tree code in tree.h trusts them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(_OPENMP) && !defined(_WIN32)
#include <pthread.h>
#endif

#include "tree.h"

namespace py = pybind11;

namespace {

template <typename T>
using Array = py::array_t<T, py::array::c_style>;

std::string shape_str(const py::array& a) {
  std::string s = "[";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + "]";
}

std::string shape_str(const std::vector<py::ssize_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void check_shape(const py::array& a, const std::vector<py::ssize_t>& shape, const char* name) {
  bool ok = a.ndim() == (py::ssize_t)shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
  if (!ok) throw py::value_error(std::string(name) + " must have shape " + shape_str(shape) + ", got " + shape_str(a));
}

// The 12 Forest arrays, checked against one another: node arrays [B, C], tree arrays [B].
struct HostForest {
  ts::Forest f;

  HostForest(Array<int32_t>& parent, Array<int32_t>& first_child, Array<int32_t>& num_children,
             Array<int32_t>& visits, Array<double>& value_sum, Array<float>& prior, Array<float>& reward,
             Array<int32_t>& virtual_loss, Array<int16_t>& depth, Array<uint8_t>& flags,
             Array<int32_t>& num_nodes, Array<uint8_t>& full) {
    if (parent.ndim() != 2) throw py::value_error("Forest.parent must be 2-D [B, C], got shape " + shape_str(parent));
    const py::ssize_t B = parent.shape(0), C = parent.shape(1);
    if (C < 1 || C > INT32_MAX) throw py::value_error("Forest capacity must be in [1, 2^31), got " + std::to_string(C));
    const std::vector<py::ssize_t> node_shape{B, C}, tree_shape{B};
    check_shape(first_child, node_shape, "Forest.first_child");
    check_shape(num_children, node_shape, "Forest.num_children");
    check_shape(visits, node_shape, "Forest.visits");
    check_shape(value_sum, node_shape, "Forest.value_sum");
    check_shape(prior, node_shape, "Forest.prior");
    check_shape(reward, node_shape, "Forest.reward");
    check_shape(virtual_loss, node_shape, "Forest.virtual_loss");
    check_shape(depth, node_shape, "Forest.depth");
    check_shape(flags, node_shape, "Forest.flags");
    check_shape(num_nodes, tree_shape, "Forest.num_nodes");
    check_shape(full, tree_shape, "Forest.full");
    f = ts::Forest{parent.mutable_data(), first_child.mutable_data(), num_children.mutable_data(),
                   visits.mutable_data(), value_sum.mutable_data(), prior.mutable_data(),
                   reward.mutable_data(), virtual_loss.mutable_data(), depth.mutable_data(),
                   flags.mutable_data(), num_nodes.mutable_data(), full.mutable_data(),
                   (int64_t)B, (int32_t)C};
  }
  int64_t B() const { return f.num_trees; }
};

// GNU libgomp's thread pool does not survive fork(): a forked child (multiprocessing's default
// start method on Linux) that enters a parallel region after its parent did hangs for ever.
// Such a child runs the trees serially instead.
std::atomic<bool> g_pool_started{false};  // this process has run a parallel region
std::atomic<bool> g_serial_only{false};   // forked from a process whose pool had started

#if defined(_OPENMP) && !defined(_WIN32)
void on_fork_child() {
  if (g_pool_started) g_serial_only = true;
}
#endif

// One tree costs well under a microsecond per operation, so a thread needs this many trees before
// the fork/join pays for itself. Below it the work stays serial, which also keeps a search loop that
// shares its cores with a model's own threads from stalling on spinning workers.
constexpr int64_t kMinTreesPerThread = 128;

// Run fn(b) for every tree b, in parallel over trees; num_threads <= 0: the OpenMP default.
template <typename Fn>
void for_each_tree(int64_t B, int num_threads, const Fn& fn) {
#ifdef _OPENMP
  int threads = num_threads > 0 ? num_threads : omp_get_max_threads();
  if (threads > B / kMinTreesPerThread) threads = (int)(B / kMinTreesPerThread);
  if (threads > 1 && !g_serial_only) {
    g_pool_started = true;
    // Chunks of several trees amortise the scheduling; dynamic, as tree sizes differ.
    int64_t chunk = B / ((int64_t)threads * 8);
    if (chunk < 1) chunk = 1;
    if (chunk > 16) chunk = 16;
#pragma omp parallel for schedule(dynamic, chunk) num_threads(threads)
    for (int64_t b = 0; b < B; ++b) fn(b);
    return;
  }
#else
  (void)num_threads;
#endif
  for (int64_t b = 0; b < B; ++b) fn(b);
}

#define FOREST_PARAMS                                                                                         \
  Array<int32_t> parent, Array<int32_t> first_child, Array<int32_t> num_children, Array<int32_t> visits,      \
      Array<double> value_sum, Array<float> prior, Array<float> reward, Array<int32_t> virtual_loss,          \
      Array<int16_t> depth, Array<uint8_t> flags, Array<int32_t> num_nodes, Array<uint8_t> full

#define FOREST_ARGS \
  parent, first_child, num_children, visits, value_sum, prior, reward, virtual_loss, depth, flags, num_nodes, full

#define FOREST_PY_ARGS                                                                                       \
  py::arg("parent").noconvert(), py::arg("first_child").noconvert(), py::arg("num_children").noconvert(),    \
      py::arg("visits").noconvert(), py::arg("value_sum").noconvert(), py::arg("prior").noconvert(),         \
      py::arg("reward").noconvert(), py::arg("virtual_loss").noconvert(), py::arg("depth").noconvert(),      \
      py::arg("flags").noconvert(), py::arg("num_nodes").noconvert(), py::arg("full").noconvert()

void py_select(FOREST_PARAMS, Array<int32_t> out, int rule, double c, double virtual_loss_weight, int num_threads) {
  HostForest hf(FOREST_ARGS);
  if (!ts::valid_select_rule(rule)) throw py::value_error("select: unknown rule code " + std::to_string(rule));
  if (out.ndim() != 2 || out.shape(0) != hf.B())
    throw py::value_error("select: out must have shape [" + std::to_string(hf.B()) + ", L], got " + shape_str(out));
  const int64_t L = out.shape(1);
  if (L > INT32_MAX) throw py::value_error("select: leaves_per_tree too large");
  int32_t* o = out.mutable_data();
  const ts::Forest f = hf.f;
  py::gil_scoped_release release;
  for_each_tree(f.num_trees, num_threads, [&](int64_t b) {
    ts::select_tree(f.tree(b), o + b * L, (int32_t)L, rule, c, virtual_loss_weight);
  });
}

void py_expand(FOREST_PARAMS, Array<int32_t> leaves, Array<int32_t> counts, Array<float> priors, Array<float> rewards,
            Array<uint8_t> terminal, Array<int32_t> out, int num_threads) {
  HostForest hf(FOREST_ARGS);
  const int64_t B = hf.B();
  if (leaves.ndim() != 2 || leaves.shape(0) != B)
    throw py::value_error("expand: leaves must have shape [" + std::to_string(B) + ", L], got " + shape_str(leaves));
  const py::ssize_t L = leaves.shape(1);
  if (priors.ndim() != 3 || priors.shape(0) != B || priors.shape(1) != L)
    throw py::value_error("expand: priors must have shape [" + std::to_string(B) + ", " + std::to_string(L) +
                          ", K], got " + shape_str(priors));
  const py::ssize_t K = priors.shape(2);
  if (L > INT32_MAX || K > INT32_MAX) throw py::value_error("expand: L or K too large");
  check_shape(counts, {B, L}, "expand: counts");
  check_shape(rewards, {B, L, K}, "expand: rewards");
  check_shape(terminal, {B, L, K}, "expand: terminal");
  check_shape(out, {B, L}, "expand: out");
  const int32_t* lv = leaves.data();
  const int32_t* ct = counts.data();
  const float* pr = priors.data();
  const float* rw = rewards.data();
  const uint8_t* tm = terminal.data();
  int32_t* o = out.mutable_data();
  const ts::Forest f = hf.f;
  py::gil_scoped_release release;
  for_each_tree(B, num_threads, [&](int64_t b) {
    const int64_t row = b * L, block = b * L * K;
    ts::expand_tree(f.tree(b), lv + row, ct + row, pr + block, rw + block, tm + block, o + row, (int32_t)L,
                    (int32_t)K);
  });
}

void py_backup(FOREST_PARAMS, Array<int32_t> leaves, Array<double> values, int rule, int num_threads) {
  HostForest hf(FOREST_ARGS);
  if (!ts::valid_backup_rule(rule)) throw py::value_error("backup: unknown rule code " + std::to_string(rule));
  const int64_t B = hf.B();
  if (leaves.ndim() != 2 || leaves.shape(0) != B)
    throw py::value_error("backup: leaves must have shape [" + std::to_string(B) + ", L], got " + shape_str(leaves));
  const py::ssize_t L = leaves.shape(1);
  if (L > INT32_MAX) throw py::value_error("backup: L too large");
  check_shape(values, {B, L}, "backup: values");
  const int32_t* lv = leaves.data();
  const double* vs = values.data();
  const ts::Forest f = hf.f;
  py::gil_scoped_release release;
  for_each_tree(B, num_threads, [&](int64_t b) {
    ts::backup_tree(f.tree(b), lv + b * L, vs + b * L, (int32_t)L, rule);
  });
}

void py_best_path(FOREST_PARAMS, Array<int32_t> out, int by, int num_threads) {
  HostForest hf(FOREST_ARGS);
  if (!ts::valid_best_path_key(by)) throw py::value_error("best_path: unknown key code " + std::to_string(by));
  const int64_t B = hf.B();
  if (out.ndim() != 2 || out.shape(0) != B)
    throw py::value_error("best_path: out must have shape [" + std::to_string(B) + ", D], got " + shape_str(out));
  const int64_t D = out.shape(1);
  if (D > INT32_MAX) throw py::value_error("best_path: D too large");
  int32_t* o = out.mutable_data();
  const ts::Forest f = hf.f;
  py::gil_scoped_release release;
  for_each_tree(B, num_threads, [&](int64_t b) { ts::best_path_tree(f.tree(b), o + b * D, (int32_t)D, by); });
}

void py_terminal_nodes(FOREST_PARAMS, Array<int32_t> out, int num_threads) {
  HostForest hf(FOREST_ARGS);
  const int64_t B = hf.B();
  if (out.ndim() != 2 || out.shape(0) != B)
    throw py::value_error("terminal_nodes: out must have shape [" + std::to_string(B) + ", T], got " + shape_str(out));
  const int64_t T = out.shape(1);
  if (T > INT32_MAX) throw py::value_error("terminal_nodes: T too large");
  int32_t* o = out.mutable_data();
  const ts::Forest f = hf.f;
  py::gil_scoped_release release;
  for_each_tree(B, num_threads, [&](int64_t b) { ts::terminal_nodes_tree(f.tree(b), o + b * T, (int32_t)T); });
}

int py_max_terminal_count(FOREST_PARAMS, int num_threads) {
  HostForest hf(FOREST_ARGS);
  const ts::Forest f = hf.f;
  std::vector<int32_t> counts((size_t)f.num_trees, 0);
  {
    py::gil_scoped_release release;
    for_each_tree(f.num_trees, num_threads, [&](int64_t b) { counts[(size_t)b] = ts::count_terminals(f.tree(b)); });
  }
  int32_t best = 0;
  for (int32_t c : counts) best = c > best ? c : best;
  return best;
}

int py_omp_max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "Batched MCTS tree operations on NumPy Forest arrays (C++, OpenMP over trees). "
            "Semantics: mcts/core/reference.py. Called through mcts.core.native._CppOps.";
#ifdef _OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
  m.attr("__version__") = "0.1.0";
#if defined(_OPENMP) && !defined(_WIN32)
  pthread_atfork(nullptr, nullptr, &on_fork_child);
#endif

  m.def("select", &py_select, FOREST_PY_ARGS, py::arg("out").noconvert(), py::arg("rule"), py::arg("c"),
        py::arg("virtual_loss_weight"), py::arg("num_threads") = 0,
        "Select up to L = out.shape[1] leaves per tree into out (int32 [B, L], -1 padded), adding virtual "
        "loss on each path. rule: 0 uct, 1 puct, 2 mcts_star.");
  m.def("expand", &py_expand, FOREST_PY_ARGS, py::arg("leaves").noconvert(), py::arg("counts").noconvert(),
        py::arg("priors").noconvert(), py::arg("rewards").noconvert(), py::arg("terminal").noconvert(),
        py::arg("out").noconvert(), py::arg("num_threads") = 0,
        "Allocate counts[b, l] children under leaves[b, l]; out: first child ids (int32 [B, L], -1: not expanded).");
  m.def("backup", &py_backup, FOREST_PY_ARGS, py::arg("leaves").noconvert(), py::arg("values").noconvert(),
        py::arg("rule"), py::arg("num_threads") = 0,
        "Back values (float64 [B, L]) up from leaves (int32 [B, L]) to the roots. rule: 0 mean, 1 max, 2 quality.");
  m.def("best_path", &py_best_path, FOREST_PY_ARGS, py::arg("out").noconvert(), py::arg("by"),
        py::arg("num_threads") = 0,
        "Best root-to-node path per tree into out (int32 [B, D], -1 padded). by: 0 visits, 1 q, 2 reward.");
  m.def("terminal_nodes", &py_terminal_nodes, FOREST_PY_ARGS, py::arg("out").noconvert(), py::arg("num_threads") = 0,
        "Terminal node ids per tree in increasing order into out (int32 [B, T], -1 padded).");
  m.def("max_terminal_count", &py_max_terminal_count, FOREST_PY_ARGS, py::arg("num_threads") = 0,
        "The largest number of terminal nodes in one tree.");
  m.def("omp_max_threads", &py_omp_max_threads, "OpenMP's default number of threads (1 without OpenMP).");
}
