// The per-tree operations of the batched MCTS core, shared by the C++ (OpenMP) and CUDA backends.
//
// Every function works on ONE tree (one row of each [B, C] array of the Forest, see
// mcts/core/forest.py) and is a line-by-line port of mcts/core/reference.py, the specification:
// the same leaves, child ids, visit counts and flags bit for bit, and the same float64 values.
// To make the floating-point results identical, every expression is evaluated in float64 in the
// reference's order through fadd/fmul/fdiv/fsqrt (on the device: the _rn intrinsics, which are
// never fused into FMAs; on the host the build passes -ffp-contract=off), sums run over children
// in increasing id, and ties break to the lowest node id.
//
// Device code cannot allocate, so nothing here uses a heap buffer: the BLOCKED scratch bit lives
// in `flags`, and best_path's reward products use the caller's output row as scratch.
#pragma once

#include <math.h>
#include <stdint.h>

#if defined(__CUDACC__)
#define TS_HD __host__ __device__ __forceinline__
#else
#define TS_HD inline
#endif

namespace ts {

// Bits of `flags` (forest.py).
constexpr uint8_t kExpanded = 1;
constexpr uint8_t kTerminal = 2;
constexpr uint8_t kAnswerKnown = 4;
constexpr uint8_t kPruned = 8;
constexpr uint8_t kBlocked = 128;  // scratch bit inside one select call, always cleared on return

constexpr int32_t kNoParent = -1;
constexpr int32_t kRoot = 0;

// Rule codes, as in mcts/core/native.py.
enum SelectRule : int { kUct = 0, kPuct = 1, kMctsStar = 2 };
enum BackupRule : int { kMean = 0, kMax = 1, kQuality = 2 };
enum BestPathKey : int { kByVisits = 0, kByQ = 1, kByReward = 2 };

TS_HD bool valid_select_rule(int r) { return r == kUct || r == kPuct || r == kMctsStar; }
TS_HD bool valid_backup_rule(int r) { return r == kMean || r == kMax || r == kQuality; }
TS_HD bool valid_best_path_key(int k) { return k == kByVisits || k == kByQ || k == kByReward; }

// float64 arithmetic in exactly the order written: never contracted into an FMA.
TS_HD double fadd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
TS_HD double fmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
TS_HD double fdiv(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
TS_HD double fsqrt(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return sqrt(a);  // IEEE: correctly rounded, as Python's math.sqrt
#endif
}
// Python's math.log calls the C library's log on the host, so the CPU backend matches it bit for
// bit. CUDA's log is accurate to 1 ulp but is a different implementation: a select score may
// differ in its last bit on the device (it can only change a choice between two scores that
// differ by about one ulp; exactly equal scores stay equal, as siblings share the parent's log).
TS_HD double flog(double a) { return log(a); }

// One tree's rows of the Forest arrays.
struct Tree {
  int32_t* parent;        // [C]
  int32_t* first_child;   // [C]
  int32_t* num_children;  // [C]
  int32_t* visits;        // [C]
  double* value_sum;      // [C]
  float* prior;           // [C]
  float* reward;          // [C]
  int32_t* virtual_loss;  // [C]
  int16_t* depth;         // [C]
  uint8_t* flags;         // [C]
  int32_t* num_nodes;     // the tree's entry of num_nodes [B]
  uint8_t* full;          // the tree's entry of full [B]
  int32_t capacity;       // C

  // Allocated nodes, clamped to the capacity so a corrupt count never reads out of bounds.
  TS_HD int32_t allocated() const {
    const int32_t n = *num_nodes;
    return n < 0 ? 0 : (n > capacity ? capacity : n);
  }
  // Children of `node` are [begin, end), clamped to the capacity.
  TS_HD int32_t child_begin(int32_t node) const {
    const int32_t s = first_child[node];
    return s < 0 ? 0 : s;
  }
  TS_HD int32_t child_end(int32_t node) const {
    const int64_t e = (int64_t)first_child[node] + (int64_t)num_children[node];
    return e > capacity ? capacity : (int32_t)e;
  }
};

// The whole Forest: base pointers of the [B, C] and [B] arrays.
struct Forest {
  int32_t* parent;
  int32_t* first_child;
  int32_t* num_children;
  int32_t* visits;
  double* value_sum;
  float* prior;
  float* reward;
  int32_t* virtual_loss;
  int16_t* depth;
  uint8_t* flags;
  int32_t* num_nodes;
  uint8_t* full;
  int64_t num_trees;  // B
  int32_t capacity;   // C

  TS_HD Tree tree(int64_t b) const {
    const int64_t o = b * (int64_t)capacity;
    return Tree{parent + o, first_child + o, num_children + o, visits + o, value_sum + o, prior + o,
                reward + o, virtual_loss + o, depth + o, flags + o, num_nodes + b, full + b, capacity};
  }
};

// ---------------------------------------------------------------------------------------------
// select

TS_HD bool is_leaf(uint8_t flags) { return !(flags & kExpanded) || (flags & kTerminal); }

TS_HD bool available(const Tree& t, int32_t s) {
  const uint8_t f = t.flags[s];
  if (f & (kPruned | kBlocked)) return false;
  return !(is_leaf(f) && t.virtual_loss[s] > 0);
}

// n(s) = visits + w * pending
TS_HD double effective_visits(const Tree& t, int32_t s, double vl_weight) {
  return fadd((double)t.visits[s], fmul(vl_weight, (double)t.virtual_loss[s]));
}

// The rule's score of child s. `parent_term` is sqrt(Np) for puct and log(max(Np, 1)) for
// uct / mcts_star: the same value for every sibling, so it is computed once per parent.
TS_HD double child_score(const Tree& t, int32_t s, int rule, double c, double vl_weight,
                         double parent_term) {
  const double n = effective_visits(t, s, vl_weight);
  const double q = n > 0.0 ? fdiv(t.value_sum[s], n) : (double)t.reward[s];
  if (rule == kPuct) {
    // q + c * P * sqrt(Np) / (1 + n), left to right
    return fadd(q, fdiv(fmul(fmul(c, (double)t.prior[s]), parent_term), fadd(1.0, n)));
  }
  // q + c * sqrt(log(max(Np, 1)) / (1 + n))
  return fadd(q, fmul(c, fsqrt(fdiv(parent_term, fadd(1.0, n)))));
}

// One descent from the root: the leaf reached, or -1. Nodes with nothing selectable below are
// marked BLOCKED (counted in *marked) and the descent backs up one level.
TS_HD int32_t descend(const Tree& t, int rule, double c, double vl_weight, int32_t* marked) {
  int32_t node = kRoot;
  if (!available(t, node)) return -1;
  while (!is_leaf(t.flags[node])) {
    const double n_parent = effective_visits(t, node, vl_weight);
    double parent_term;
    if (rule == kPuct) {
      parent_term = fsqrt(n_parent);
    } else {
      parent_term = flog(1.0 > n_parent ? 1.0 : n_parent);  // Python's max(Np, 1.0)
    }
    int32_t best = -1;
    double best_score = -INFINITY;
    const int32_t end = t.child_end(node);
    for (int32_t s = t.child_begin(node); s < end; ++s) {
      if (!available(t, s)) continue;
      const double score = child_score(t, s, rule, c, vl_weight, parent_term);
      if (best == -1 || score > best_score) {
        best = s;
        best_score = score;
      }
    }
    if (best == -1) {
      t.flags[node] |= kBlocked;
      ++*marked;
      if (node == kRoot) return -1;
      node = t.parent[node];
      if (node < 0 || node >= t.capacity) return -1;  // corrupt parent link: stop
      continue;
    }
    node = best;
  }
  return node;
}

// Select up to L distinct leaves of one tree into out[0, L) (-1 padded), adding a pending
// selection (virtual loss) to every node on each path.
TS_HD void select_tree(const Tree& t, int32_t* out, int32_t L, int rule, double c, double vl_weight) {
  int32_t marked = 0;
  int32_t slot = 0;
  for (; slot < L; ++slot) {
    const int32_t leaf = descend(t, rule, c, vl_weight, &marked);
    if (leaf < 0) break;
    out[slot] = leaf;
    int32_t steps = 0;
    for (int32_t node = leaf; node != kNoParent && steps < t.capacity; node = t.parent[node], ++steps) {
      t.virtual_loss[node] += 1;
    }
  }
  for (; slot < L; ++slot) out[slot] = -1;
  if (marked) {
    const int32_t n = t.allocated();
    for (int32_t s = 0; s < n; ++s) t.flags[s] &= (uint8_t)~kBlocked;
  }
}

// ---------------------------------------------------------------------------------------------
// expand

// Allocate counts[l] children under each leaves[l], in order l = 0, 1, ...; priors, rewards and
// terminal are this tree's [L, K] blocks. out[l]: first child id, or -1 (see reference.expand).
TS_HD void expand_tree(const Tree& t, const int32_t* leaves, const int32_t* counts, const float* priors,
                       const float* rewards, const uint8_t* terminal, int32_t* out, int32_t L, int32_t K) {
  for (int32_t slot = 0; slot < L; ++slot) {
    out[slot] = -1;
    const int32_t leaf = leaves[slot];
    const int32_t k = counts[slot];
    if (leaf < 0 || leaf >= *t.num_nodes || leaf >= t.capacity || k < 0 || k > K) continue;
    if (t.flags[leaf] & (kExpanded | kTerminal)) continue;
    const int32_t start = *t.num_nodes;
    if ((int64_t)start + (int64_t)k > (int64_t)t.capacity) {
      *t.full = 1;
      continue;
    }
    const int64_t row = (int64_t)slot * (int64_t)K;
    const int16_t child_depth = (int16_t)(t.depth[leaf] + 1);
    for (int32_t j = 0; j < k; ++j) {
      const int32_t s = start + j;
      t.parent[s] = leaf;
      t.first_child[s] = -1;
      t.num_children[s] = 0;
      t.visits[s] = 0;
      t.value_sum[s] = 0.0;
      t.prior[s] = priors[row + j];
      t.reward[s] = rewards[row + j];
      t.virtual_loss[s] = 0;
      t.depth[s] = child_depth;
      t.flags[s] = terminal[row + j] ? kTerminal : (uint8_t)0;
    }
    t.first_child[leaf] = start;
    t.num_children[leaf] = k;
    t.flags[leaf] |= kExpanded;
    *t.num_nodes = start + k;
    out[slot] = start;
  }
}

// ---------------------------------------------------------------------------------------------
// backup

// max: Q = max over visited children of their Q; quality: sum of W / sum of N over visited
// children. Stored as W = N * Q.
TS_HD void aggregate_children(const Tree& t, int32_t node, int rule) {
  double best = -INFINITY;
  double sum_w = 0.0;
  int64_t sum_n = 0;
  const int32_t end = t.child_end(node);
  for (int32_t s = t.child_begin(node); s < end; ++s) {
    const int32_t n = t.visits[s];
    if (n <= 0) continue;
    const double w = t.value_sum[s];
    const double q = fdiv(w, (double)n);
    if (q > best) best = q;  // Python's max(best, q) keeps `best` unless q is greater
    sum_w = fadd(sum_w, w);
    sum_n += n;
  }
  if (sum_n == 0) return;
  const double q = rule == kMax ? best : fdiv(sum_w, (double)sum_n);
  t.value_sum[node] = fmul((double)t.visits[node], q);
}

// Back values[l] up from each leaves[l] to the root, in order l = 0, 1, ...
TS_HD void backup_tree(const Tree& t, const int32_t* leaves, const double* values, int32_t L, int rule) {
  for (int32_t slot = 0; slot < L; ++slot) {
    const int32_t leaf = leaves[slot];
    if (leaf < 0 || leaf >= *t.num_nodes || leaf >= t.capacity) continue;
    const double v = values[slot];
    int32_t steps = 0;
    for (int32_t node = leaf; node != kNoParent && steps < t.capacity; node = t.parent[node], ++steps) {
      if (t.virtual_loss[node] > 0) t.virtual_loss[node] -= 1;
      t.visits[node] += 1;
      if (rule == kMean || node == leaf) {
        t.value_sum[node] = fadd(t.value_sum[node], v);
      } else {
        aggregate_children(t, node, rule);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// best_path

// Number of nodes on the path root..node.
TS_HD int32_t path_length(const Tree& t, int32_t node) {
  int32_t len = 0;
  while (node != kNoParent && len < t.capacity) {
    ++len;
    node = t.parent[node];
  }
  return len;
}

// Write the path root..node into row[0, D), -1 padded (truncated if longer than D, which a
// consistent forest never is: D = 1 + the largest depth). Returns the path's length.
TS_HD int32_t write_path(const Tree& t, int32_t node, int32_t* row, int32_t D) {
  const int32_t len = path_length(t, node);
  for (int32_t i = len - 1; i >= 0; --i) {
    if (i < D) row[i] = node;
    node = t.parent[node];
  }
  for (int32_t i = len; i < D; ++i) row[i] = -1;
  return len;
}

// Product of the rewards on the path root..node, the root's excluded, multiplied from the root
// down: the reference's chain product[child] = product[parent] * reward[child]. The path is
// collected in row (the caller's output row, used as scratch) so no buffer is needed.
TS_HD double path_product(const Tree& t, int32_t node, int32_t* row, int32_t D) {
  const int32_t len = path_length(t, node);
  double product = 1.0;
  if (len <= D) {
    int32_t s = node;
    for (int32_t i = len - 1; i >= 0; --i) {
      row[i] = s;
      s = t.parent[s];
    }
    for (int32_t i = 1; i < len; ++i) product = fmul(product, (double)t.reward[row[i]]);
  } else {
    // No room for the path (only in an inconsistent forest): find each ancestor by walking up.
    for (int32_t i = 1; i < len; ++i) {
      int32_t s = node;
      for (int32_t up = len - 1 - i; up > 0; --up) s = t.parent[s];
      product = fmul(product, (double)t.reward[s]);
    }
  }
  return product;
}

// Greedy descent from the root to the unpruned child with most visits (by = visits) or the
// highest Q (by = q), until a node without children.
TS_HD int32_t greedy_end(const Tree& t, int by) {
  int32_t node = kRoot;
  for (int32_t steps = 0; t.num_children[node] > 0 && steps < t.capacity; ++steps) {
    int32_t best = -1;
    double best_key = -INFINITY;
    const int32_t end = t.child_end(node);
    for (int32_t s = t.child_begin(node); s < end; ++s) {
      if (t.flags[s] & kPruned) continue;
      const int32_t n = t.visits[s];
      double key;
      if (by == kByVisits) {
        key = (double)n;
      } else {
        key = n > 0 ? fdiv(t.value_sum[s], (double)n) : (double)t.reward[s];
      }
      if (best == -1 || key > best_key) {
        best = s;
        best_key = key;
      }
    }
    if (best == -1) break;
    node = best;
  }
  return node;
}

// The childless, unpruned node with the highest reward product, terminal nodes preferred.
TS_HD int32_t best_reward_end(const Tree& t, int32_t* row, int32_t D) {
  const int32_t n = t.allocated();
  int32_t best = kRoot;
  double best_key = -INFINITY;
  bool best_terminal = false;
  // Siblings are contiguous, so consecutive candidates often share a parent: cache its product.
  int32_t cached_parent = -2;
  double cached_product = 1.0;
  for (int32_t s = 0; s < n; ++s) {
    const uint8_t f = t.flags[s];
    if (t.num_children[s] > 0 || (f & kPruned)) continue;
    const bool terminal = (f & kTerminal) != 0;
    if (best_terminal && !terminal) continue;  // cannot win: skip its product
    double product = 1.0;
    if (s != kRoot) {
      const int32_t p = t.parent[s];
      if (p != cached_parent) {
        cached_parent = p;
        cached_product = p == kRoot ? 1.0 : path_product(t, p, row, D);
      }
      product = fmul(cached_product, (double)t.reward[s]);
    }
    if ((terminal && !best_terminal) || (terminal == best_terminal && product > best_key)) {
      best = s;
      best_key = product;
      best_terminal = terminal;
    }
  }
  return best;
}

// The best root-to-node path of one tree into row[0, D), -1 padded.
TS_HD void best_path_tree(const Tree& t, int32_t* row, int32_t D, int by) {
  const int32_t end = by == kByReward ? best_reward_end(t, row, D) : greedy_end(t, by);
  write_path(t, end, row, D);
}

// ---------------------------------------------------------------------------------------------
// terminal nodes

TS_HD int32_t count_terminals(const Tree& t) {
  const int32_t n = t.allocated();
  int32_t count = 0;
  for (int32_t s = 0; s < n; ++s) count += (t.flags[s] & kTerminal) ? 1 : 0;
  return count;
}

// Terminal node ids in increasing order into row[0, T), -1 padded.
TS_HD void terminal_nodes_tree(const Tree& t, int32_t* row, int32_t T) {
  const int32_t n = t.allocated();
  int32_t count = 0;
  for (int32_t s = 0; s < n && count < T; ++s) {
    if (t.flags[s] & kTerminal) row[count++] = s;
  }
  for (int32_t i = count; i < T; ++i) row[i] = -1;
}

}  // namespace ts
