// Per-face and per-vertex attributes for sampling a triangle mesh (float64, as numpy / trimesh compute them):
// unit face normals and doubled areas, angle-weighted vertex normals, and the original Hunyuan3D sharp-edge
// weights. One pass over the faces each instead of a dozen full-size temporaries.
#include <algorithm>
#include <cmath>
#include <vector>

#include "distance/udf_api.h"
#include "mc_parallel.h"

namespace fk {
namespace {

struct D3 {
  double x, y, z;
};
inline D3 sub(D3 a, D3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
inline double dot(D3 a, D3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
inline D3 cross(D3 a, D3 b) { return {a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x}; }
inline double norm(D3 a) { return std::sqrt(dot(a, a)); }

struct Mesh {
  const double* v;
  const int64_t* f;
  D3 at(int64_t face, int c) const {
    const int64_t i = f[3 * face + c];
    return {v[3 * i], v[3 * i + 1], v[3 * i + 2]};
  }
};

// fn = n / |n| (0 for a degenerate face), area2 = |n|, n = (b - a) x (c - a).
inline void face_normal(const Mesh& m, int64_t face, double* fn, double* area2) {
  const D3 a = m.at(face, 0);
  const D3 n = cross(sub(m.at(face, 1), a), sub(m.at(face, 2), a));
  const double len = norm(n);
  const double s = len > 0 ? len : 1.0;
  fn[0] = n.x / s;
  fn[1] = n.y / s;
  fn[2] = n.z / s;
  *area2 = len;
}

}  // namespace

void mesh_face_normals_cpu(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t normals, uintptr_t area2,
                           int num_threads) {
  const Mesh m{reinterpret_cast<const double*>(verts), reinterpret_cast<const int64_t*>(faces)};
  double* fn = reinterpret_cast<double*>(normals);
  double* ar = reinterpret_cast<double*>(area2);
  parallel::parallel_chunks(num_faces, 1 << 14, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t face = lo; face < hi; ++face) face_normal(m, face, fn + 3 * face, ar + face);
  });
}

void mesh_sharp_weights_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                            double cos_threshold, uintptr_t vertex_normals, uintptr_t edge_weights,
                            int num_threads) {
  const Mesh m{reinterpret_cast<const double*>(verts), reinterpret_cast<const int64_t*>(faces)};
  const int64_t* f = m.f;
  std::vector<double> fn(static_cast<size_t>(3 * num_faces)), area(static_cast<size_t>(num_faces));
  mesh_face_normals_cpu(verts, faces, num_faces, uintptr_t(fn.data()), uintptr_t(area.data()), num_threads);
  // Vertex normals: sum over faces of (unit face normal x corner angle), normalised (trimesh's rule). Summed per
  // corner slot and the three slot sums added, in numpy's order: where the normals around a vertex cancel (a
  // pinch of the shell) the sum is then exactly 0, as there, and not a rounding residue pointing anywhere.
  double* vn = reinterpret_cast<double*>(vertex_normals);
  std::fill(vn, vn + 3 * num_verts, 0.0);
  std::vector<double> slot(static_cast<size_t>(3 * num_verts));
  for (int c = 0; c < 3; ++c) {
    std::fill(slot.begin(), slot.end(), 0.0);
    for (int64_t face = 0; face < num_faces; ++face) {
      const D3 p0 = m.at(face, c), e1 = sub(m.at(face, (c + 1) % 3), p0), e2 = sub(m.at(face, (c + 2) % 3), p0);
      const double l12 = norm(e1) * norm(e2);
      const double angle = l12 > 0 ? std::acos(std::min(1.0, std::max(-1.0, dot(e1, e2) / l12))) : 0.0;
      double* out = slot.data() + 3 * f[3 * face + c];
      for (int k = 0; k < 3; ++k) out[k] += fn[3 * face + k] * angle;
    }
    for (int64_t i = 0; i < 3 * num_verts; ++i) vn[i] += slot[i];
  }
  parallel::parallel_chunks(num_verts, 1 << 14, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t i = lo; i < hi; ++i) {
      double* n = vn + 3 * i;
      const double len = std::sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
      const double s = len > 0 ? len : 1.0;
      for (int k = 0; k < 3; ++k) n[k] /= s;
    }
  });
  // Sharpness by the original's rule: per corner slot in turn, min(itself, vn . fn of the last face holding the
  // vertex in that slot) (numpy's repeated-index assignment, where the last write wins).
  std::vector<double> sharpness(static_cast<size_t>(num_verts), 1.0);
  std::vector<int64_t> last(static_cast<size_t>(num_verts));
  for (int c = 0; c < 3; ++c) {
    std::fill(last.begin(), last.end(), int64_t(-1));
    for (int64_t face = 0; face < num_faces; ++face) last[f[3 * face + c]] = face;
    for (int64_t i = 0; i < num_verts; ++i) {
      if (last[i] < 0) continue;
      const double* n = fn.data() + 3 * last[i];
      sharpness[i] = std::min(sharpness[i], vn[3 * i] * n[0] + vn[3 * i + 1] * n[1] + vn[3 * i + 2] * n[2]);
    }
  }
  // Edge weights, slot-major (edges (f0, f1) of every face, then (f1, f2), then (f2, f0)): length when both ends
  // are sharp, else 0.
  double* w = reinterpret_cast<double*>(edge_weights);
  parallel::parallel_chunks(num_faces, 1 << 14, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int c = 0; c < 3; ++c)
      for (int64_t face = lo; face < hi; ++face) {
        const int64_t a = f[3 * face + c], b = f[3 * face + (c + 1) % 3];
        const bool sharp = sharpness[a] < cos_threshold && sharpness[b] < cos_threshold;
        w[c * num_faces + face] = sharp ? norm(sub(m.at(face, (c + 1) % 3), m.at(face, c))) : 0.0;
      }
  });
}

}  // namespace fk

#include <charconv>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace fk {

// A plain OBJ: "v x y z" lines (%.9g: float32 positions round-trip) then "f a b c" lines (1-based). Blocks of
// lines are formatted in parallel into their own buffers and written in order.
void mesh_write_obj_cpu(const std::string& path, uintptr_t verts, int64_t num_verts, uintptr_t faces,
                        int64_t num_faces, int num_threads) {
  const double* v = reinterpret_cast<const double*>(verts);
  const int64_t* f = reinterpret_cast<const int64_t*>(faces);
  constexpr int64_t kBlock = 1 << 15;
  const int64_t vblocks = (num_verts + kBlock - 1) / kBlock, fblocks = (num_faces + kBlock - 1) / kBlock;
  std::vector<std::string> text(static_cast<size_t>(vblocks + fblocks));
  parallel::parallel_chunks(vblocks + fblocks, 1, num_threads, [&](int64_t lo, int64_t hi, int) {
    char line[128];
    for (int64_t blk = lo; blk < hi; ++blk) {
      std::string& out = text[blk];
      if (blk < vblocks) {
        const int64_t i1 = std::min(num_verts, (blk + 1) * kBlock);
        out.reserve(size_t(40 * (i1 - blk * kBlock)));
        for (int64_t i = blk * kBlock; i < i1; ++i) {
          const int n = std::snprintf(line, sizeof line, "v %.9g %.9g %.9g\n", v[3 * i], v[3 * i + 1], v[3 * i + 2]);
          out.append(line, size_t(n));
        }
      } else {
        const int64_t b = blk - vblocks, i1 = std::min(num_faces, (b + 1) * kBlock);
        out.reserve(size_t(24 * (i1 - b * kBlock)));
        for (int64_t i = b * kBlock; i < i1; ++i) {
          char* p = line;
          *p++ = 'f';
          for (int c = 0; c < 3; ++c) {
            *p++ = ' ';
            p = std::to_chars(p, line + sizeof line, f[3 * i + c] + 1).ptr;
          }
          *p++ = '\n';
          out.append(line, size_t(p - line));
        }
      }
    }
  });
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (!file) throw std::runtime_error("cannot open " + path + " for writing");
  bool ok = true;
  for (const std::string& t : text) ok = ok && std::fwrite(t.data(), 1, t.size(), file) == t.size();
  ok = (std::fclose(file) == 0) && ok;
  if (!ok) throw std::runtime_error("writing " + path + " failed (disk full?)");
}

}  // namespace fk
