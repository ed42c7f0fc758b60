"""Headless rendering of coloured triangle meshes with moderngl on EGL (no display needed).

On a CPU machine EGL is Mesa's llvmpipe; on a machine with an NVIDIA driver it is the GPU.
Meshes are given in the camera frame with OpenCV's convention (x right, y down, z forward) and
drawn by a pinhole camera (fx, fy, cx, cy in pixels, pixel centres at integer coordinates), so a
point projects exactly where `u = fx X / Z + cx` puts it. The renderer returns the shaded image
composited over a background, the coverage (anti-aliased mask) and the depth Z of the nearest
surface per pixel, which the synthetic data use for keypoint visibility. No torch needed.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import moderngl
import numpy as np
import scipy.sparse

from hkmr_ros.camera import CameraModel

EGL_PACKAGES = "libegl1 libgl1-mesa-dri"

_VERTEX_SHADER = """
#version 330
uniform vec4 intrinsics;   // fx, fy, cx, cy (pixels, OpenCV)
uniform vec2 image_size;   // width, height
uniform vec2 clip_range;   // near, far (metres)
in vec3 in_position;       // camera frame, OpenCV axes
in vec3 in_normal;
in vec3 in_colour;
out vec3 v_position;
out vec3 v_normal;
out vec3 v_colour;
void main() {
    float z = in_position.z;
    float n = clip_range.x;
    float f = clip_range.y;
    // NDC x = 2 (u + 0.5) / W - 1 with u = fx X / Z + cx; the GL pixel centre is at +0.5.
    // y is not flipped: framebuffer row 0 (read first) is image row 0.
    float x = 2.0 * intrinsics.x / image_size.x * in_position.x
              + (2.0 * (intrinsics.z + 0.5) / image_size.x - 1.0) * z;
    float y = 2.0 * intrinsics.y / image_size.y * in_position.y
              + (2.0 * (intrinsics.w + 0.5) / image_size.y - 1.0) * z;
    gl_Position = vec4(x, y, (f + n) / (f - n) * z - 2.0 * f * n / (f - n), z);
    v_position = in_position;
    v_normal = in_normal;
    v_colour = in_colour;
}
"""

_FRAGMENT_SHADER = """
#version 330
uniform vec3 light_direction;  // unit vector towards the light, camera frame
uniform vec3 light_terms;      // ambient, diffuse, specular
in vec3 v_position;
in vec3 v_normal;
in vec3 v_colour;
layout(location = 0) out vec4 out_colour;
layout(location = 1) out float out_depth;
void main() {
    vec3 view = normalize(-v_position);
    vec3 normal = normalize(v_normal);
    if (dot(normal, view) < 0.0) normal = -normal;  // two-sided: open meshes and back faces
    float diffuse = max(dot(normal, light_direction), 0.0);
    float specular = pow(max(dot(reflect(-light_direction, normal), view), 0.0), 16.0);
    vec3 colour = v_colour * (light_terms.x + light_terms.y * diffuse) + light_terms.z * specular;
    out_colour = vec4(clamp(colour, 0.0, 1.0), 1.0);
    out_depth = v_position.z;
}
"""


@dataclass(frozen=True)
class Light:
    """Ambient + directional (Lambert) + a little specular; `direction` points towards the light."""
    direction: Tuple[float, float, float] = (0.0, -0.5, -1.0)
    ambient: float = 0.45
    diffuse: float = 0.6
    specular: float = 0.05


@dataclass
class RenderResult:
    """image HxWx3 uint8 RGB; coverage HxW float32 in [0, 1]; depth HxW float32 (inf: no surface)."""
    image: np.ndarray
    coverage: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """HxW bool: pixels at least half covered by the mesh."""
        return self.coverage >= 0.5


@functools.lru_cache(maxsize=None)
def get_context() -> moderngl.Context:
    """The process's one EGL context (creating one is slow, so it is made once and reused).

    Mesa's llvmpipe and triton (which torch imports lazily, e.g. through torch._dynamo) each
    load their own LLVM; loading triton after llvmpipe crashes the process (segmentation fault),
    while the other order works. So triton, when installed, is loaded first.
    """
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")
    try:
        return moderngl.create_standalone_context(backend="egl")
    except Exception as e:  # glcontext raises plain Exceptions for missing libraries/devices
        raise RuntimeError(
            f"could not create a headless OpenGL context through EGL ({e}). "
            f"Install the EGL and Mesa drivers (Debian/Ubuntu: apt-get install {EGL_PACKAGES}), "
            "or on an NVIDIA machine make sure the driver's EGL library is installed."
        ) from None


def vertex_face_incidence(faces: np.ndarray, num_vertices: int) -> scipy.sparse.csr_matrix:
    """VxF sparse matrix with a 1 where a vertex belongs to a face: sums face normals per vertex."""
    rows = faces.reshape(-1)
    cols = np.repeat(np.arange(len(faces)), 3)
    return scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                   shape=(num_vertices, len(faces)))


class MeshRenderer:
    """Renders meshes of one topology (`faces` Fx3) with per-vertex colours.

    `samples` is the multisampling count (anti-aliasing); it is clamped to what the driver allows.
    Framebuffers are made once per image size and reused.
    """

    def __init__(self, faces: np.ndarray, num_vertices: int, samples: int = 4,
                 near: float = 0.05, far: float = 100.0):
        faces = np.asarray(faces)
        if faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"faces must be Fx3, got shape {faces.shape}")
        if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
            raise ValueError(f"faces index vertices outside 0..{num_vertices - 1}")
        self.ctx = get_context()
        self.faces = faces.astype(np.int32)
        self.num_vertices = int(num_vertices)
        self.samples = int(min(samples, self.ctx.max_samples)) if samples > 1 else 0
        self.near, self.far = float(near), float(far)
        self._incidence = vertex_face_incidence(self.faces, self.num_vertices)
        self.program = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.vbo = self.ctx.buffer(reserve=self.num_vertices * 9 * 4)
        self.ibo = self.ctx.buffer(self.faces.tobytes())
        self.vao = self.ctx.vertex_array(
            self.program, [(self.vbo, "3f 3f 3f", "in_position", "in_normal", "in_colour")],
            index_buffer=self.ibo, index_element_size=4)
        self._framebuffers: Dict[Tuple[int, int], Tuple[moderngl.Framebuffer, moderngl.Framebuffer]] = {}

    def vertex_normals(self, vertices: np.ndarray) -> np.ndarray:
        """Vx3 area-weighted unit normals."""
        v = vertices[self.faces]
        face_normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        normals = self._incidence @ face_normals
        return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)

    def _framebuffer_pair(self, width: int, height: int):
        key = (width, height)
        if key not in self._framebuffers:
            size = (width, height)
            draw = self.ctx.framebuffer(
                color_attachments=[self.ctx.renderbuffer(size, 4, samples=self.samples),
                                   self.ctx.renderbuffer(size, 1, samples=self.samples, dtype="f4")],
                depth_attachment=self.ctx.depth_renderbuffer(size, samples=self.samples))
            if self.samples:
                resolved = self.ctx.framebuffer(
                    color_attachments=[self.ctx.renderbuffer(size, 4),
                                       self.ctx.renderbuffer(size, 1, dtype="f4")])
            else:
                resolved = draw
            self._framebuffers[key] = (draw, resolved)
        return self._framebuffers[key]

    def render(self, vertices: np.ndarray, colours: np.ndarray, camera: CameraModel,
               background: Optional[np.ndarray] = None, light: Light = Light()) -> RenderResult:
        """Draw the mesh.

        vertices: Vx3 metres, camera frame (OpenCV); colours: Vx3 RGB in [0, 1];
        background: HxWx3 uint8 (camera.height x camera.width) or None for black.
        """
        vertices = np.asarray(vertices, dtype=np.float32)
        colours = np.asarray(colours, dtype=np.float32)
        if vertices.shape != (self.num_vertices, 3) or colours.shape != (self.num_vertices, 3):
            raise ValueError(f"vertices and colours must be {self.num_vertices}x3, got "
                             f"{vertices.shape} and {colours.shape}")
        width, height = int(camera.width), int(camera.height)
        if background is not None and background.shape != (height, width, 3):
            raise ValueError(f"background must be {height}x{width}x3, got {background.shape}")
        normals = self.vertex_normals(vertices).astype(np.float32)
        self.vbo.write(np.concatenate([vertices, normals, colours], axis=1).tobytes())

        direction = np.asarray(light.direction, dtype=np.float64)
        direction = direction / np.linalg.norm(direction)
        self.program["intrinsics"].value = (camera.fx, camera.fy, camera.cx, camera.cy)
        self.program["image_size"].value = (float(width), float(height))
        self.program["clip_range"].value = (self.near, self.far)
        self.program["light_direction"].value = tuple(direction)
        self.program["light_terms"].value = (light.ambient, light.diffuse, light.specular)

        draw, resolved = self._framebuffer_pair(width, height)
        draw.use()
        draw.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        self.ctx.enable(moderngl.DEPTH_TEST)
        self.ctx.disable(moderngl.CULL_FACE)
        self.vao.render(moderngl.TRIANGLES)
        if resolved is not draw:
            self.ctx.copy_framebuffer(resolved, draw)

        rgba = np.frombuffer(resolved.read(components=4, attachment=0), np.uint8).reshape(height, width, 4)
        depth_sum = np.frombuffer(resolved.read(components=1, attachment=1, dtype="f4"),
                                  np.float32).reshape(height, width)
        coverage = rgba[..., 3].astype(np.float32) / 255.0
        # resolved values are coverage-weighted averages over the samples (premultiplied)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(coverage > 0, depth_sum / coverage, np.inf).astype(np.float32)
        premultiplied = rgba[..., :3].astype(np.float32)
        if background is None:
            image = premultiplied
        else:
            image = premultiplied + (1.0 - coverage[..., None]) * background.astype(np.float32)
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        return RenderResult(image=image, coverage=coverage, depth=depth)
