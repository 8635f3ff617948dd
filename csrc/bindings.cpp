// pybind11 module flowkernels._C: integer pointers in, no libtorch, no Python objects kept.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

#include "distance/lbvh_api.h"
#include "distance/udf_api.h"
#include "mc_api.h"

namespace py = pybind11;

namespace fk {
void bind_flow(py::module_& m);  // csrc/flow/flow_bindings.cpp
}

namespace {

fk::GridDesc grid_desc(int dtype, uintptr_t data, std::array<int64_t, 3> shape, std::array<int64_t, 3> strides,
                       double level, bool decide_from_values = true) {
  fk::GridDesc g{fk::DType(dtype), data, {}, {}, level, decide_from_values};
  for (int a = 0; a < 3; ++a) {
    g.shape[a] = shape[a];
    g.strides[a] = strides[a];
  }
  return g;
}

fk::UdfGridDesc udf_grid_desc(std::array<double, 3> origin, std::array<double, 3> step, std::array<int64_t, 3> shape) {
  fk::UdfGridDesc g{};
  for (int a = 0; a < 3; ++a) {
    g.origin[a] = origin[a];
    g.step[a] = step[a];
    g.shape[a] = shape[a];
  }
  return g;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "flowkernels native core (marching cubes, CPU flow kernels, mesh distances); called through the "
            "flowkernels package";
  fk::bind_flow(m);
  m.def("cuda_built", &fk::cuda_built);
  m.def(
      "mc_offsets_cpu",
      [](uintptr_t counts, uintptr_t offsets, int64_t rows) {
        py::gil_scoped_release release;
        return fk::mc_offsets_cpu(counts, offsets, rows);
      },
      py::arg("counts"), py::arg("offsets"), py::arg("rows"));
  m.def("_set_fail_thread_start", &fk::set_fail_thread_start, py::arg("nth"),
        "test hook: starting CPU worker thread `nth` (1-based) of each parallel run fails; 0 turns it off");
  m.def(
      "mc_scratch_words",
      [](std::array<int64_t, 3> shape, int method) -> int64_t {
        return fk::mc_scratch_words_cpu(grid_desc(0, 0, shape, {1, 1, 1}, 0.0), method);
      },
      py::arg("shape"), py::arg("method"));
  m.def(
      "mc_count",
      [](int dtype, uintptr_t data, std::array<int64_t, 3> shape, std::array<int64_t, 3> strides, double level,
         uintptr_t counts, uintptr_t spans, uintptr_t scratch, int method, int num_threads, bool decide) {
        fk::GridDesc g = grid_desc(dtype, data, shape, strides, level, decide);
        py::gil_scoped_release release;
        fk::mc_count_cpu(g, counts, spans, scratch, method, num_threads);
      },
      py::arg("dtype"), py::arg("data"), py::arg("shape"), py::arg("strides"), py::arg("level"), py::arg("counts"),
      py::arg("spans"), py::arg("scratch"), py::arg("method"), py::arg("num_threads"), py::arg("decide") = true);
  m.def(
      "mc_emit",
      [](int dtype, uintptr_t data, std::array<int64_t, 3> shape, std::array<int64_t, 3> strides, double level,
         uintptr_t offsets, uintptr_t spans, uintptr_t verts, uintptr_t faces, uintptr_t normals,
         std::array<double, 3> origin, std::array<double, 3> scale, bool flip, int64_t centre_first,
         uintptr_t scratch, int method, int num_threads, bool decide) {
        fk::GridDesc g = grid_desc(dtype, data, shape, strides, level, decide);
        fk::EmitDesc d{offsets, spans, verts, faces, normals, {}, {}, flip, centre_first};
        for (int a = 0; a < 3; ++a) {
          d.origin[a] = origin[a];
          d.scale[a] = scale[a];
        }
        py::gil_scoped_release release;
        fk::mc_emit_cpu(g, d, scratch, method, num_threads);
      },
      py::arg("dtype"), py::arg("data"), py::arg("shape"), py::arg("strides"), py::arg("level"), py::arg("offsets"),
      py::arg("spans"), py::arg("verts"), py::arg("faces"), py::arg("normals"), py::arg("origin"), py::arg("scale"),
      py::arg("flip"), py::arg("centre_first"), py::arg("scratch"), py::arg("method"), py::arg("num_threads"),
      py::arg("decide") = true);
  // The brick algorithm: the CUDA driver, and the CPU method "bricks" (cuda=false) that runs the same logic.
  m.def(
      "mc_brick_scratch_bytes",
      [](bool cuda, std::array<int64_t, 3> shape) { return fk::mc_brick_scratch_bytes(shape.data(), cuda); },
      py::arg("cuda"), py::arg("shape"));
  m.def(
      "mc_brick_count",
      [](bool cuda, int dtype, uintptr_t data, std::array<int64_t, 3> shape, std::array<int64_t, 3> strides,
         double level, uintptr_t scratch, uintptr_t totals, uintptr_t stream, int num_threads, bool decide) {
        fk::GridDesc g = grid_desc(dtype, data, shape, strides, level, decide);
        py::gil_scoped_release release;
        if (cuda) fk::mc_brick_count_cuda(g, scratch, totals, stream);
        else fk::mc_brick_count_cpu(g, scratch, totals, num_threads);
      },
      py::arg("cuda"), py::arg("dtype"), py::arg("data"), py::arg("shape"), py::arg("strides"), py::arg("level"),
      py::arg("scratch"), py::arg("totals"), py::arg("stream"), py::arg("num_threads"), py::arg("decide") = true);
  m.def(
      "mc_brick_emit",
      [](bool cuda, int dtype, uintptr_t data, std::array<int64_t, 3> shape, std::array<int64_t, 3> strides,
         double level, uintptr_t scratch, int64_t n_active, uintptr_t verts, uintptr_t faces, uintptr_t normals,
         std::array<double, 3> origin, std::array<double, 3> scale, bool flip, int64_t centre_first,
         uintptr_t stream, int num_threads, bool decide) {
        fk::GridDesc g = grid_desc(dtype, data, shape, strides, level, decide);
        fk::EmitDesc d{0, 0, verts, faces, normals, {}, {}, flip, centre_first};
        for (int a = 0; a < 3; ++a) {
          d.origin[a] = origin[a];
          d.scale[a] = scale[a];
        }
        py::gil_scoped_release release;
        if (cuda) fk::mc_brick_emit_cuda(g, d, scratch, n_active, stream);
        else fk::mc_brick_emit_cpu(g, d, scratch, n_active, num_threads);
      },
      py::arg("cuda"), py::arg("dtype"), py::arg("data"), py::arg("shape"), py::arg("strides"), py::arg("level"),
      py::arg("scratch"), py::arg("n_active"), py::arg("verts"), py::arg("faces"), py::arg("normals"),
      py::arg("origin"), py::arg("scale"), py::arg("flip"), py::arg("centre_first"), py::arg("stream"),
      py::arg("num_threads"), py::arg("decide") = true);
  m.def(
      "udf_band_grid",
      [](uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces, std::array<double, 3> origin,
         std::array<double, 3> step, std::array<int64_t, 3> shape, double band, uintptr_t out, int num_threads) {
        const fk::UdfGridDesc g = udf_grid_desc(origin, step, shape);
        py::gil_scoped_release release;
        fk::udf_band_grid_cpu(verts, num_verts, faces, num_faces, g, band, out, num_threads);
      },
      py::arg("verts"), py::arg("num_verts"), py::arg("faces"), py::arg("num_faces"), py::arg("origin"),
      py::arg("step"), py::arg("shape"), py::arg("band"), py::arg("out"), py::arg("num_threads"));
  m.def(
      "udf_band_grid_cuda",
      [](uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces, std::array<double, 3> origin,
         std::array<double, 3> step, std::array<int64_t, 3> shape, double band, uintptr_t out, uintptr_t scratch,
         int64_t scratch_bytes, uintptr_t stream) {
        const fk::UdfGridDesc g = udf_grid_desc(origin, step, shape);
        py::gil_scoped_release release;
        fk::udf_band_grid_cuda(verts, num_verts, faces, num_faces, g, band, out, scratch, scratch_bytes, stream);
      },
      py::arg("verts"), py::arg("num_verts"), py::arg("faces"), py::arg("num_faces"), py::arg("origin"),
      py::arg("step"), py::arg("shape"), py::arg("band"), py::arg("out"), py::arg("scratch"),
      py::arg("scratch_bytes"), py::arg("stream"));
  m.def("udf_band_grid_scratch_bytes_cuda", &fk::udf_band_grid_scratch_bytes_cuda, py::arg("num_faces"));
  m.def(
      "udf_band_grid_tiles",
      [](uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces, std::array<double, 3> origin,
         std::array<double, 3> step, std::array<int64_t, 3> shape, double band, uintptr_t out) {
        const fk::UdfGridDesc g = udf_grid_desc(origin, step, shape);
        py::gil_scoped_release release;
        fk::udf_band_grid_tiles_cpu(verts, num_verts, faces, num_faces, g, band, out);
      },
      py::arg("verts"), py::arg("num_verts"), py::arg("faces"), py::arg("num_faces"), py::arg("origin"),
      py::arg("step"), py::arg("shape"), py::arg("band"), py::arg("out"));
  m.def(
      "udf_points",
      [](uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
         int64_t num_points, uintptr_t out, int num_threads) {
        py::gil_scoped_release release;
        fk::udf_points_cpu(verts, num_verts, faces, num_faces, points, num_points, out, num_threads);
      },
      py::arg("verts"), py::arg("num_verts"), py::arg("faces"), py::arg("num_faces"), py::arg("points"),
      py::arg("num_points"), py::arg("out"), py::arg("num_threads"));
  m.def("lbvh_node_bytes", &fk::lbvh_node_bytes);
  m.def("lbvh_build_scratch_bytes", &fk::lbvh_build_scratch_bytes, py::arg("num_faces"));
  m.def(
      "lbvh_keys",
      [](bool cuda, uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t scene, uintptr_t keys,
         uintptr_t stream, int num_threads) {
        py::gil_scoped_release release;
        if (cuda) fk::lbvh_keys_cuda(verts, faces, num_faces, scene, keys, stream);
        else fk::lbvh_keys_cpu(verts, faces, num_faces, scene, keys, num_threads);
      },
      py::arg("cuda"), py::arg("verts"), py::arg("faces"), py::arg("num_faces"), py::arg("scene"), py::arg("keys"),
      py::arg("stream"), py::arg("num_threads"));
  m.def(
      "lbvh_build",
      [](bool cuda, uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t sorted_keys, uintptr_t nodes,
         uintptr_t scratch, uintptr_t stream, int num_threads) {
        py::gil_scoped_release release;
        if (cuda) fk::lbvh_build_cuda(verts, faces, num_faces, sorted_keys, nodes, scratch, stream);
        else fk::lbvh_build_cpu(verts, faces, num_faces, sorted_keys, nodes, scratch, num_threads);
      },
      py::arg("cuda"), py::arg("verts"), py::arg("faces"), py::arg("num_faces"), py::arg("sorted_keys"),
      py::arg("nodes"), py::arg("scratch"), py::arg("stream"), py::arg("num_threads"));
  m.def(
      "lbvh_query",
      [](bool cuda, uintptr_t nodes, uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t points,
         int64_t num_points, uintptr_t order, uintptr_t mask, uintptr_t out_dist, uintptr_t out_tri, uintptr_t stream,
         int num_threads) {
        py::gil_scoped_release release;
        if (cuda)
          fk::lbvh_query_cuda(nodes, verts, faces, num_faces, points, num_points, order, mask, out_dist, out_tri,
                              stream);
        else
          fk::lbvh_query_cpu(nodes, verts, faces, num_faces, points, num_points, order, mask, out_dist, out_tri,
                             num_threads);
      },
      py::arg("cuda"), py::arg("nodes"), py::arg("verts"), py::arg("faces"), py::arg("num_faces"), py::arg("points"),
      py::arg("num_points"), py::arg("order"), py::arg("mask"), py::arg("out_dist"), py::arg("out_tri"),
      py::arg("stream"), py::arg("num_threads"));
  m.def(
      "mesh_face_normals",
      [](uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t normals, uintptr_t area2, int num_threads) {
        py::gil_scoped_release release;
        fk::mesh_face_normals_cpu(verts, faces, num_faces, normals, area2, num_threads);
      },
      py::arg("verts"), py::arg("faces"), py::arg("num_faces"), py::arg("normals"), py::arg("area2"),
      py::arg("num_threads"));
  m.def(
      "mesh_merge_like_trimesh",
      [](uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces, uintptr_t merged_faces,
         uintptr_t rep, uintptr_t inv) {
        py::gil_scoped_release release;
        return fk::mesh_merge_like_trimesh_cpu(verts, num_verts, faces, num_faces, merged_faces, rep, inv);
      },
      py::arg("verts"), py::arg("num_verts"), py::arg("faces"), py::arg("num_faces"), py::arg("merged_faces"),
      py::arg("rep"), py::arg("inv"));
  m.def(
      "mesh_trimesh_face_pass",
      [](uintptr_t verts, uintptr_t faces, int64_t num_faces, uintptr_t normals, uintptr_t cosines, int num_threads) {
        py::gil_scoped_release release;
        fk::mesh_trimesh_face_pass_cpu(verts, faces, num_faces, normals, cosines, num_threads);
      },
      py::arg("verts"), py::arg("faces"), py::arg("num_faces"), py::arg("normals"), py::arg("cosines"),
      py::arg("num_threads"));
  m.def(
      "mesh_trimesh_sharp",
      [](uintptr_t faces, int64_t num_verts, int64_t num_faces, uintptr_t normals, uintptr_t angles,
         double cos_threshold, uintptr_t vertex_normals, uintptr_t edge_lengths, uintptr_t verts, uintptr_t selected,
         int num_threads) {
        py::gil_scoped_release release;
        fk::mesh_trimesh_sharp_cpu(faces, num_verts, num_faces, normals, angles, cos_threshold, vertex_normals,
                                   edge_lengths, verts, selected, num_threads);
      },
      py::arg("faces"), py::arg("num_verts"), py::arg("num_faces"), py::arg("normals"), py::arg("angles"),
      py::arg("cos_threshold"), py::arg("vertex_normals"), py::arg("edge_lengths"), py::arg("verts"),
      py::arg("selected"), py::arg("num_threads"));
  m.def(
      "mesh_write_obj",
      [](const std::string& path, uintptr_t verts, int64_t num_verts, uintptr_t faces, int64_t num_faces,
         int num_threads) {
        py::gil_scoped_release release;
        fk::mesh_write_obj_cpu(path, verts, num_verts, faces, num_faces, num_threads);
      },
      py::arg("path"), py::arg("verts"), py::arg("num_verts"), py::arg("faces"), py::arg("num_faces"),
      py::arg("num_threads"));
}
