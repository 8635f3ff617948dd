// Per-face and per-vertex attributes for sampling a triangle mesh (float64, as numpy / trimesh compute them):
// unit face normals and doubled areas, and the original Hunyuan3D sharp-edge rule on trimesh's normals, written
// operation for operation as trimesh computes them (built with -ffp-contract=off: no fused multiply-adds), with
// the corner angles' arccos left to numpy (the original's). One pass over the faces each instead of a dozen
// full-size temporaries.
#include <algorithm>
#include <array>
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

int64_t mesh_merge_like_trimesh_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                                    uintptr_t merged_faces, uintptr_t rep, uintptr_t inv) {
  const double* v = reinterpret_cast<const double*>(verts);
  const int64_t* f = reinterpret_cast<const int64_t*>(faces);
  int64_t* mf = reinterpret_cast<int64_t*>(merged_faces);
  int64_t* rp = reinterpret_cast<int64_t*>(rep);
  int64_t* iv = reinterpret_cast<int64_t*>(inv);
  std::fill(iv, iv + num_verts, int64_t(-2));
  for (int64_t i = 0; i < 3 * num_faces; ++i) iv[f[i]] = -1;  // referenced, not yet numbered
  // Keys: coordinates * 1e8 rounded half to even (numpy's round), as trimesh's merge_vertices compares them;
  // merged vertices are numbered in order of first occurrence. An open-addressing table (linear probing) of
  // merged indices: a node-based map spent ~0.3 us per vertex allocating.
  size_t cap = 16;
  while (cap < size_t(2 * num_verts)) cap <<= 1;
  std::vector<int64_t> slot(cap, -1);
  std::vector<std::array<int64_t, 3>> keys;
  keys.reserve(size_t(num_verts));
  int64_t count = 0;
  for (int64_t i = 0; i < num_verts; ++i) {
    if (iv[i] == -2) {
      iv[i] = -1;  // unreferenced: dropped, as trimesh drops it
      continue;
    }
    const std::array<int64_t, 3> key{int64_t(std::nearbyint(v[3 * i] * 1e8)),
                                     int64_t(std::nearbyint(v[3 * i + 1] * 1e8)),
                                     int64_t(std::nearbyint(v[3 * i + 2] * 1e8))};
    uint64_t h = 1469598103934665603ull;
    for (int64_t x : key) h = (h ^ uint64_t(x)) * 1099511628211ull;
    size_t at = size_t(h ^ (h >> 31)) & (cap - 1);
    while (slot[at] >= 0 && keys[size_t(slot[at])] != key) at = (at + 1) & (cap - 1);
    if (slot[at] < 0) {
      slot[at] = count;
      keys.push_back(key);
      rp[count++] = i;
    }
    iv[i] = slot[at];
  }
  for (int64_t i = 0; i < 3 * num_faces; ++i) mf[i] = iv[f[i]];
  return count;
}

namespace {

// trimesh.util.unitize of one row: times the reciprocal of the norm where it exceeds 1e-13, else times the norm.
inline D3 unitize(D3 x, bool* valid = nullptr) {
  const double norm = std::sqrt((x.x * x.x + x.y * x.y) + x.z * x.z);
  const bool ok = norm > 1e-13;
  if (valid) *valid = ok;
  const double s = ok ? 1.0 / norm : norm;
  return {x.x * s, x.y * s, x.z * s};
}

inline double dot3(D3 a, D3 b) { return (a.x * b.x + a.y * b.y) + a.z * b.z; }

}  // namespace

void mesh_trimesh_face_pass_cpu(uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t normals,
                                uintptr_t cosines, int num_threads) {
  const Mesh m{reinterpret_cast<const double*>(verts), reinterpret_cast<const int64_t*>(faces)};
  double* fn = reinterpret_cast<double*>(normals);
  double* cs = reinterpret_cast<double*>(cosines);
  parallel::parallel_chunks(num_faces, 1 << 14, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t face = lo; face < hi; ++face) {
      const D3 t0 = m.at(face, 0), t1 = m.at(face, 1), t2 = m.at(face, 2);
      const D3 e0 = sub(t1, t0), e1 = sub(t2, t1);
      bool ok = false;
      const D3 u = unitize(cross(e0, e1), &ok);
      fn[3 * face] = ok ? u.x : 0.0;
      fn[3 * face + 1] = ok ? u.y : 0.0;
      fn[3 * face + 2] = ok ? u.z : 0.0;
      const D3 ue0 = unitize(e0), ue1 = unitize(e1), ue2 = unitize(sub(t2, t0));
      const D3 neg{-ue0.x, -ue0.y, -ue0.z};
      cs[2 * face] = std::min(1.0, std::max(-1.0, dot3(ue0, ue2)));
      cs[2 * face + 1] = std::min(1.0, std::max(-1.0, dot3(neg, ue1)));
    }
  });
}

void mesh_trimesh_sharp_cpu(uintptr_t faces, int64_t num_verts, int64_t num_faces, uintptr_t normals,
                            uintptr_t angles, double cos_threshold, uintptr_t vertex_normals, uintptr_t edge_lengths,
                            uintptr_t verts, uintptr_t selected, int num_threads) {
  const int64_t* f = reinterpret_cast<const int64_t*>(faces);
  const double* fn = reinterpret_cast<const double*>(normals);
  const double* ac = reinterpret_cast<const double*>(angles);
  double* vn = reinterpret_cast<double*>(vertex_normals);
  // Per vertex, angle x face normal of every face with a valid normal, added in (face, corner) order: the
  // order of scipy's COO product in trimesh. Serial: the order is the result.
  std::fill(vn, vn + 3 * num_verts, 0.0);
  for (int64_t face = 0; face < num_faces; ++face) {
    const double* n = fn + 3 * face;
    if (!(((n[0] * n[0] + n[1] * n[1]) + n[2] * n[2]) > 0.5)) continue;
    double ang[3] = {ac[2 * face], ac[2 * face + 1], 0.0};
    ang[2] = (M_PI - ang[0]) - ang[1];
    if (ang[0] < 1e-8 || ang[1] < 1e-8 || ang[2] < 1e-8) ang[0] = ang[1] = ang[2] = 0.0;
    for (int c = 0; c < 3; ++c) {
      double* out = vn + 3 * f[3 * face + c];
      for (int k = 0; k < 3; ++k) out[k] += ang[c] * n[k];
    }
  }
  parallel::parallel_chunks(num_verts, 1 << 14, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int64_t i = lo; i < hi; ++i) {
      const D3 u = unitize({vn[3 * i], vn[3 * i + 1], vn[3 * i + 2]});
      vn[3 * i] = u.x;
      vn[3 * i + 1] = u.y;
      vn[3 * i + 2] = u.z;
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
      const double* n = fn + 3 * last[i];
      sharpness[i] = std::min(sharpness[i], dot3({vn[3 * i], vn[3 * i + 1], vn[3 * i + 2]}, {n[0], n[1], n[2]}));
    }
  }
  // Edges, slot-major (edges (f0, f1) of every face, then (f1, f2), then (f2, f0)): selected when both ends are
  // sharp; weight = length when selected, else 0.
  const Mesh m{reinterpret_cast<const double*>(verts), f};
  double* w = reinterpret_cast<double*>(edge_lengths);
  uint8_t* sel = reinterpret_cast<uint8_t*>(selected);
  parallel::parallel_chunks(num_faces, 1 << 14, num_threads, [&](int64_t lo, int64_t hi, int) {
    for (int c = 0; c < 3; ++c)
      for (int64_t face = lo; face < hi; ++face) {
        const int64_t a = f[3 * face + c], b = f[3 * face + (c + 1) % 3];
        const bool sharp = sharpness[a] < cos_threshold && sharpness[b] < cos_threshold;
        sel[c * num_faces + face] = sharp;
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
