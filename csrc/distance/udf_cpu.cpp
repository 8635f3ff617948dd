// CPU driver for the unsigned-distance core (udf_core.h): a narrow-band grid by x-slabs per thread, and exact
// point queries through a median-split BVH.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "distance/udf_api.h"
#include "distance/udf_core.h"
#include "mc_parallel.h"

namespace fk {
namespace {

using udf::Vec3;

// fn(begin, end) over [0, n) in dynamically handed-out chunks (slabs and queries differ widely in work), on the
// shared pool: a thread that fails to start or a chunk that throws becomes an error after the joins.
template <typename Fn>
void parallel_chunks(int64_t n, int64_t grain, int num_threads, Fn&& fn) {
  parallel::parallel_chunks(n, grain, num_threads, [&](int64_t lo, int64_t hi, int) { fn(lo, hi); });
}

struct MeshView {
  const float* verts;
  int64_t num_verts;
  const int64_t* faces;
  int64_t num_faces;

  Vec3 corner(int64_t f, int c) const {
    const int64_t v = faces[3 * f + c];
    if (v < 0 || v >= num_verts)
      throw std::invalid_argument("faces[" + std::to_string(f) + "] indexes vertex " + std::to_string(v) +
                                  " of " + std::to_string(num_verts));
    return {verts[3 * v], verts[3 * v + 1], verts[3 * v + 2]};
  }
};

// The core's float grid frame from the binding's double one.
udf::Grid to_grid(const UdfGridDesc& desc) {
  udf::Grid g;
  for (int a = 0; a < 3; ++a) {
    g.origin[a] = float(desc.origin[a]);
    g.step[a] = float(desc.step[a]);
    g.n[a] = desc.shape[a];
  }
  return g;
}

}  // namespace

void udf_band_grid_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                       const UdfGridDesc& desc, double band, uintptr_t out, int num_threads) {
  const MeshView mesh{reinterpret_cast<const float*>(verts), num_verts, reinterpret_cast<const int64_t*>(faces),
                      num_faces};
  const udf::Grid g = to_grid(desc);
  float* dist = reinterpret_cast<float*>(out);
  const int64_t nx = g.n[0], plane = g.n[1] * g.n[2], total = nx * plane;
  const float fband = float(band);
  parallel_chunks(total, 1 << 20, num_threads, [&](int64_t lo, int64_t hi) { std::fill(dist + lo, dist + hi, fband); });
  if (num_faces == 0 || total == 0) return;

  // Bin triangles into x-slabs (CSR lists): a thread takes whole slabs, so no two threads write one grid point.
  // Slabs are thin enough (>= 8 per thread) that dynamic hand-out balances meshes denser on one side.
  const int threads = parallel::resolve_threads(num_threads);
  const int64_t width = std::max<int64_t>(1, nx / (8 * int64_t(threads)));
  const int64_t slabs = (nx + width - 1) / width;
  std::vector<int64_t> first_slab(num_faces), last_slab(num_faces), start(slabs + 1, 0);
  for (int64_t f = 0; f < num_faces; ++f) {
    const Vec3 a = mesh.corner(f, 0), b = mesh.corner(f, 1), c = mesh.corner(f, 2);
    const float mn = std::min({a.x, b.x, c.x}) - fband, mx = std::max({a.x, b.x, c.x}) + fband;
    int64_t i0 = 0, i1 = nx - 1;
    if (g.step[0] > 0.f) {
      const float t0 = std::ceil((mn - g.origin[0]) / g.step[0]), t1 = std::floor((mx - g.origin[0]) / g.step[0]);
      if (!(t0 <= t1) || t1 < 0.f || t0 > float(nx - 1)) {  // misses the grid (or has a NaN corner)
        first_slab[f] = 1;
        last_slab[f] = 0;
        continue;
      }
      i0 = udf::clamp_index(t0, nx);
      i1 = udf::clamp_index(t1, nx);
    }
    first_slab[f] = i0 / width;
    last_slab[f] = i1 / width;
    for (int64_t s = first_slab[f]; s <= last_slab[f]; ++s) ++start[s + 1];
  }
  for (int64_t s = 0; s < slabs; ++s) start[s + 1] += start[s];
  std::vector<int64_t> members(start[slabs]), fill(start.begin(), start.end() - 1);
  for (int64_t f = 0; f < num_faces; ++f)
    for (int64_t s = first_slab[f]; s <= last_slab[f]; ++s) members[fill[s]++] = f;

  parallel_chunks(slabs, 1, num_threads, [&](int64_t s_lo, int64_t s_hi) {
    for (int64_t s = s_lo; s < s_hi; ++s) {
      const int64_t x_lo = s * width, x_hi = std::min(nx, x_lo + width);
      for (int64_t m = start[s]; m < start[s + 1]; ++m) {
        const int64_t f = members[m];
        udf::scatter_triangle(g, mesh.corner(f, 0), mesh.corner(f, 1), mesh.corner(f, 2), fband, x_lo, x_hi,
                              [dist](int64_t idx, float d) {
                                if (d < dist[idx]) dist[idx] = d;
                              });
      }
    }
  });
}

void udf_band_grid_tiles_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
                             const UdfGridDesc& desc, double band, uintptr_t out) {
  const MeshView mesh{reinterpret_cast<const float*>(verts), num_verts, reinterpret_cast<const int64_t*>(faces),
                      num_faces};
  const udf::Grid g = to_grid(desc);
  uint32_t* grid = reinterpret_cast<uint32_t*>(out);
  const int64_t total = g.n[0] * g.n[1] * g.n[2];
  const float fband = float(band);
  std::fill(grid, grid + total, udf::float_bits(fband));
  if (num_faces == 0 || total == 0) return;
  std::vector<int64_t> counts(static_cast<size_t>(num_faces)), start(static_cast<size_t>(num_faces));
  for (int64_t f = 0; f < num_faces; ++f) {  // the count kernel
    udf::TriWalk w;
    counts[f] = udf::setup_triangle(g, mesh.corner(f, 0), mesh.corner(f, 1), mesh.corner(f, 2), fband, 0, g.n[0], w)
                    ? udf::tile_count(w) : 0;
  }
  int64_t sum = 0;  // the exclusive scan
  for (int64_t f = 0; f < num_faces; ++f) {
    start[f] = sum;
    sum += counts[f];
  }
  for (int64_t t = sum - 1; t >= 0; --t) {  // the scatter kernel, one (block, thread) at a time
    const int64_t f = udf::tile_owner(start.data(), num_faces, t);
    for (int lane = 0; lane < udf::kTile * udf::kTile; ++lane) {
      udf::TriWalk w;
      udf::setup_triangle(g, mesh.corner(f, 0), mesh.corner(f, 1), mesh.corner(f, 2), fband, 0, g.n[0], w);
      udf::scatter_tile(w, t - start[f], lane, [grid](int64_t idx, float d) {
        const uint32_t bits = udf::float_bits(d);
        if (bits < grid[idx]) grid[idx] = bits;  // atomicMin on the bits
      });
    }
  }
}

namespace {

struct Bvh {
  std::vector<udf::BvhNode> nodes;
  std::vector<float> tri;  // 9 floats per triangle, in leaf order
};

// Disks are fitted to nodes of up to this many triangles: larger nodes are rarely flat, and each level fitted
// costs build time (measured on a 256^3 torus shell, 1.5M triangles: 16 gave the best build + query total).
constexpr int32_t kDiskMaxTriangles = 16;

// The node's cylinder: axis = the dominant direction of its area-weighted face normals, sign-blind (a node may
// hold both sheets of a double shell) by power iteration on sum(area * n n^T); centre = the box centre; radius and
// half height = the largest lateral and axial offsets of its vertices, so the cylinder holds every triangle.
void fit_disk(const MeshView& mesh, const int32_t* tris, int32_t count, udf::BvhNode& node) {
  double m[3][3] = {{0, 0, 0}, {0, 0, 0}, {0, 0, 0}};
  for (int32_t i = 0; i < count; ++i) {
    const Vec3 a = mesh.corner(tris[i], 0), b = mesh.corner(tris[i], 1), c = mesh.corner(tris[i], 2);
    const Vec3 n = udf::cross(b - a, c - a);
    const double len = std::sqrt(double(udf::dot(n, n)));
    if (!(len > 0)) continue;
    const double u[3] = {n.x / len, n.y / len, n.z / len};
    for (int r = 0; r < 3; ++r)
      for (int k = 0; k < 3; ++k) m[r][k] += len * u[r] * u[k];
  }
  int start = 0;
  for (int r = 1; r < 3; ++r) if (m[r][r] > m[start][start]) start = r;
  double v[3] = {m[start][0], m[start][1], m[start][2]};
  for (int it = 0; it < 12; ++it) {
    double w[3];
    for (int r = 0; r < 3; ++r) w[r] = m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2];
    const double len = std::sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2]);
    if (!(len > 0)) return;  // no area: no disk
    for (int r = 0; r < 3; ++r) v[r] = w[r] / len;
  }
  const Vec3 ax{float(v[0]), float(v[1]), float(v[2])};
  const Vec3 ctr{0.5f * (node.lo[0] + node.hi[0]), 0.5f * (node.lo[1] + node.hi[1]), 0.5f * (node.lo[2] + node.hi[2])};
  float radius2 = 0.f, height = 0.f;
  for (int32_t i = 0; i < count; ++i)
    for (int c = 0; c < 3; ++c) {
      const Vec3 r = mesh.corner(tris[i], c) - ctr;
      const float along = udf::dot(r, ax);
      height = std::max(height, std::fabs(along));
      radius2 = std::max(radius2, udf::dot(r, r) - along * along);
    }
  // Widened by float rounding of the bound itself, so the cylinder never cuts a triangle it should hold.
  const float pad = 1e-6f * (std::sqrt(radius2) + height) + 1e-12f;
  for (int a = 0; a < 3; ++a) {
    node.center[a] = udf::axis(ctr, a);
    node.axis[a] = udf::axis(ax, a);
  }
  node.radius = std::sqrt(std::max(radius2, 0.f)) + pad;
  node.half_height = height + pad;
}

// Median split on the longest axis of the centroids' box; leaves of <= 4 triangles. Depth <= log2(F) + 1.
// The top levels are split serially until there are a few subtrees per thread; the subtrees are built in
// parallel (each in its own depth-first node array) and spliced into one depth-first array.
struct BvhBuilder {
  const MeshView& mesh;
  std::vector<Vec3> lo, hi, cen;
  std::vector<int32_t> order;

  // The node over order[first, first + count) (bounds, disk) and, for an inner node, its split axis: the range
  // is partitioned at first + count / 2. Returns -1 for a leaf.
  int make_node(int32_t first, int32_t count, udf::BvhNode& node) {
    node = udf::BvhNode{{INFINITY, INFINITY, INFINITY}, {-INFINITY, -INFINITY, -INFINITY}, -1, first, count,
                        {0.f, 0.f, 0.f}, {0.f, 0.f, 1.f}, INFINITY, INFINITY};
    float clo[3] = {INFINITY, INFINITY, INFINITY}, chi[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int32_t i = first; i < first + count; ++i) {
      const int32_t f = order[i];
      for (int a = 0; a < 3; ++a) {
        node.lo[a] = std::min(node.lo[a], udf::axis(lo[f], a));
        node.hi[a] = std::max(node.hi[a], udf::axis(hi[f], a));
        clo[a] = std::min(clo[a], udf::axis(cen[f], a));
        chi[a] = std::max(chi[a], udf::axis(cen[f], a));
      }
    }
    if (count <= kDiskMaxTriangles) fit_disk(mesh, order.data() + first, count, node);
    if (count <= 4) return -1;
    const int ax = (chi[0] - clo[0] >= chi[1] - clo[1] && chi[0] - clo[0] >= chi[2] - clo[2]) ? 0
                   : (chi[1] - clo[1] >= chi[2] - clo[2] ? 1 : 2);
    const int32_t half = count / 2;
    std::nth_element(order.begin() + first, order.begin() + first + half, order.begin() + first + count,
                     [&](int32_t p, int32_t q) { return udf::axis(cen[p], ax) < udf::axis(cen[q], ax); });
    return ax;
  }

  // The subtree over order[first, first + count) as a depth-first array (right: index within `out`).
  void build_subtree(int32_t first, int32_t count, std::vector<udf::BvhNode>& out) {
    struct Task {
      int32_t first, count, parent;  // parent: node whose `right` this task fills (-1: left child or root)
    };
    std::vector<Task> stack{{first, count, -1}};
    while (!stack.empty()) {
      const Task t = stack.back();
      stack.pop_back();
      const int32_t id = int32_t(out.size());
      if (t.parent >= 0) out[t.parent].right = id;
      udf::BvhNode node;
      const int split = make_node(t.first, t.count, node);
      out.push_back(node);
      if (split < 0) continue;
      out[id].right = 0;  // inner node; set when the right child is built
      const int32_t half = t.count / 2;
      // Depth first with the left child next: push the right task first so the left one is built right after.
      stack.push_back({t.first + half, t.count - half, id});
      stack.push_back({t.first, half, -1});
    }
  }
};

Bvh build_bvh(const MeshView& mesh, int num_threads) {
  const int64_t n = mesh.num_faces;
  if (n >= (int64_t(1) << 31)) throw std::invalid_argument("faces: more than 2^31 triangles");
  BvhBuilder b{mesh, std::vector<Vec3>(n), std::vector<Vec3>(n), std::vector<Vec3>(n), std::vector<int32_t>(n)};
  parallel_chunks(n, 1 << 14, num_threads, [&](int64_t f0, int64_t f1) {
    for (int64_t f = f0; f < f1; ++f) {
      const Vec3 a = mesh.corner(f, 0), c1 = mesh.corner(f, 1), c2 = mesh.corner(f, 2);
      b.lo[f] = {std::min({a.x, c1.x, c2.x}), std::min({a.y, c1.y, c2.y}), std::min({a.z, c1.z, c2.z})};
      b.hi[f] = {std::max({a.x, c1.x, c2.x}), std::max({a.y, c1.y, c2.y}), std::max({a.z, c1.z, c2.z})};
      b.cen[f] = 0.5f * (b.lo[f] + b.hi[f]);
      b.order[f] = int32_t(f);
    }
  });
  // Top levels: split ranges larger than `cutoff` serially (a node and its split, as in a subtree), leaving
  // >= 8 subtrees per thread for dynamic hand-out. top[i]: a split node (children top indices) or a subtree job.
  const int threads = parallel::resolve_threads(num_threads);
  const int64_t cutoff = std::max<int64_t>(4096, n / (8 * int64_t(threads)));
  struct Top {
    udf::BvhNode node;
    int32_t left, right, job;  // job >= 0: the subtree jobs[job]
  };
  struct Job {
    int32_t first, count;
  };
  std::vector<Top> top;
  std::vector<Job> jobs;
  std::vector<int32_t> pending;  // top nodes still to split; their range waits in node.first / node.count
  auto add = [&](int32_t first, int32_t count) {
    Top t{};
    t.node.first = first;
    t.node.count = count;
    t.left = t.right = t.job = -1;
    if (count <= cutoff) {
      t.job = int32_t(jobs.size());
      jobs.push_back({first, count});
    }
    top.push_back(t);
    if (count > cutoff) pending.push_back(int32_t(top.size() - 1));
    return int32_t(top.size() - 1);
  };
  add(0, int32_t(n));
  while (!pending.empty()) {
    const int32_t id = pending.back();
    pending.pop_back();
    const int32_t first = top[id].node.first, count = top[id].node.count;
    udf::BvhNode node;
    b.make_node(first, count, node);  // count > cutoff >= 4096: always an inner node
    top[id].node = node;
    const int32_t half = count / 2;
    const int32_t l = add(first, half), r = add(first + half, count - half);
    top[id].left = l;
    top[id].right = r;
  }
  std::vector<std::vector<udf::BvhNode>> sub(jobs.size());
  parallel_chunks(int64_t(jobs.size()), 1, num_threads, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) b.build_subtree(jobs[j].first, jobs[j].count, sub[j]);
  });
  // Splice depth first: a top node, then its left subtree, then its right one (whose index it records).
  Bvh bvh;
  size_t total = top.size();
  for (const auto& s : sub) total += s.size();
  bvh.nodes.reserve(total);
  struct Emit {
    int32_t top, parent;  // parent: node whose `right` this fills (-1: none)
  };
  std::vector<Emit> stack{{0, -1}};
  while (!stack.empty()) {
    const Emit e = stack.back();
    stack.pop_back();
    const int32_t id = int32_t(bvh.nodes.size());
    if (e.parent >= 0) bvh.nodes[e.parent].right = id;
    const Top& t = top[e.top];
    if (t.job >= 0) {
      for (udf::BvhNode node : sub[t.job]) {
        if (node.right >= 0) node.right += id;
        bvh.nodes.push_back(node);
      }
      continue;
    }
    bvh.nodes.push_back(t.node);
    bvh.nodes[id].right = 0;
    stack.push_back({t.right, id});
    stack.push_back({t.left, -1});
  }
  bvh.tri.resize(size_t(9 * n));
  parallel_chunks(n, 1 << 14, num_threads, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i)
      for (int c = 0; c < 3; ++c) {
        const Vec3 v = mesh.corner(b.order[i], c);
        bvh.tri[9 * i + 3 * c] = v.x;
        bvh.tri[9 * i + 3 * c + 1] = v.y;
        bvh.tri[9 * i + 3 * c + 2] = v.z;
      }
  });
  return bvh;
}

}  // namespace

void udf_points_cpu(uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
                    int64_t num_points, uintptr_t out, int num_threads) {
  const MeshView mesh{reinterpret_cast<const float*>(verts), num_verts, reinterpret_cast<const int64_t*>(faces),
                      num_faces};
  float* dist = reinterpret_cast<float*>(out);
  const float* pts = reinterpret_cast<const float*>(points);
  if (num_faces == 0) {
    std::fill(dist, dist + num_points, INFINITY);
    return;
  }
  const Bvh bvh = build_bvh(mesh, num_threads);
  // Queries in Morton order: neighbours in the order are neighbours in space, so they walk the same nodes
  // (cache) and each starts from the bound d(prev) + |q - prev| (distance is 1-Lipschitz), which prunes most of
  // the tree before the first leaf. Points far from the mesh gain most: without a bound they open every node
  // whose box is about as far as the nearest triangle.
  std::vector<int64_t> order(num_points);
  {
    float lo[3] = {INFINITY, INFINITY, INFINITY}, hi[3] = {-INFINITY, -INFINITY, -INFINITY};
    for (int64_t p = 0; p < num_points; ++p)
      for (int a = 0; a < 3; ++a) {
        lo[a] = std::min(lo[a], pts[3 * p + a]);
        hi[a] = std::max(hi[a], pts[3 * p + a]);
      }
    std::vector<uint32_t> code(num_points);
    for (int64_t p = 0; p < num_points; ++p) {
      uint32_t c = 0;
      for (int a = 0; a < 3; ++a) {
        const float span = hi[a] - lo[a];
        const float t = span > 0.f ? (pts[3 * p + a] - lo[a]) / span : 0.f;
        uint32_t q = uint32_t(std::min(1023.f, std::max(0.f, t * 1024.f)));
        for (int b = 0; b < 10; ++b) c |= ((q >> b) & 1u) << (3 * b + a);
      }
      code[p] = c;
      order[p] = p;
    }
    std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return code[x] < code[y]; });
  }
  parallel_chunks(num_points, 1024, num_threads, [&](int64_t lo, int64_t hi) {
    Vec3 prev{0.f, 0.f, 0.f};
    float prev_d = INFINITY;
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t p = order[i];
      const Vec3 q{pts[3 * p], pts[3 * p + 1], pts[3 * p + 2]};
      const Vec3 step = q - prev;
      // Widened a little so rounding never leaves the true nearest triangle just outside the bound.
      const float bound = (prev_d + std::sqrt(udf::dot(step, step))) * 1.0001f + 1e-7f;
      const float d = std::sqrt(udf::closest_dist2(bvh.nodes.data(), bvh.tri.data(), q, bound * bound));
      dist[p] = d;
      prev = q;
      prev_d = d;
    }
  });
}

}  // namespace fk
