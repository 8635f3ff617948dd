// What the drivers export to the Python bindings. All memory is allocated by the caller (torch); pointers,
// shapes and strides arrive as integers, and the CUDA stream as a raw handle.
#pragma once
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace fk {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

struct GridDesc {
  DType dtype;
  uintptr_t data;
  int64_t shape[3];
  int64_t strides[3];  // in elements
  double level;
  // false: every ambiguous face and case 4's interior left unjoined (the sign rule, the classic tables' topology)
  bool decide_from_values = true;
};

struct EmitDesc {
  uintptr_t offsets, spans, verts, faces, normals;  // normals may be 0
  double origin[3], scale[3];
  bool flip;
  int64_t centre_first;  // edge vertices in the mesh: the centre vertices' ids follow them
};

// CPU methods: bit planes (the default: classify once, then word-wide bit logic), the row walk (one row per
// thread: the first CUDA driver's design, kept as an independent check) or bricks (the CUDA driver's algorithm,
// run through the mc_brick_* entry points below).
constexpr int kMethodBitPlanes = 0;
constexpr int kMethodRowWalk = 1;
constexpr int kMethodBricks = 2;

// counts[3 * row + {0, 1, 2}] = edge vertices owned by / triangles emitted from / centre vertices of the cells of
// row (i, j) = i * ny + j; spans[2 * row + {0, 1}] = first / last k of a point with a vertex in that row.
// scratch: mc_scratch_words_cpu uint64 words, written by the count pass and read by the emit pass.
int64_t mc_scratch_words_cpu(const GridDesc& grid, int method);
void mc_count_cpu(const GridDesc& grid, uintptr_t counts, uintptr_t spans, uintptr_t scratch, int method,
                  int num_threads);
void mc_emit_cpu(const GridDesc& grid, const EmitDesc& out, uintptr_t scratch, int method, int num_threads);
// offsets = exclusive running sum of counts over rows ([rows, 3]: edge vertices, triangles, centre vertices);
// returns the totals. On the CPU a plain loop: 65k rows at 256^3 take well under a millisecond, and a torch op
// would wake its thread pool.
std::array<int64_t, 3> mc_offsets_cpu(uintptr_t counts, uintptr_t offsets, int64_t rows);
// Test hook: in every later CPU parallel run, starting worker thread `nth` (1-based) fails; 0 turns it off.
void set_fail_thread_start(int nth);
bool cuda_built();

// The brick algorithm (csrc/marching_cubes/brick.h): the CUDA driver, and the CPU method "bricks" that runs the
// same functions lane by lane. scratch: mc_brick_scratch_bytes bytes, written by count and read by emit;
// totals: 4 int64 (edge vertices, triangles, active segments, centre vertices), on the grid's device; emit takes
// the active count.
// EmitDesc's offsets and spans are unused (the offsets live in the scratch).
int64_t mc_brick_scratch_bytes(const int64_t shape[3], bool cuda);
void mc_brick_count_cpu(const GridDesc& grid, uintptr_t scratch, uintptr_t totals, int num_threads);
void mc_brick_emit_cpu(const GridDesc& grid, const EmitDesc& out, uintptr_t scratch, int64_t n_active,
                       int num_threads);
int64_t mc_brick_scan_temp_bytes_cuda(int64_t blocks);
void mc_brick_count_cuda(const GridDesc& grid, uintptr_t scratch, uintptr_t totals, uintptr_t stream);
void mc_brick_emit_cuda(const GridDesc& grid, const EmitDesc& out, uintptr_t scratch, int64_t n_active,
                        uintptr_t stream);

}  // namespace fk
