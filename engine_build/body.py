"""The SMPL body model as plain tensor ops, for exported graphs (no smplx, no loop over 24 joints).

Same maths as smplx's `lbs` with rotation matrices in, specialised to a fixed file:

- rest joints are linear in beta (J_regressor is linear in the shaped vertices), so the joints'
  offsets from their parents are `rel_template + beta @ rel_dirs`, precomputed in float64;
- the kinematic chain is evaluated level by level of the tree (8 levels for SMPL's 24 joints): a
  level's global rotations and positions are its parents' (a Gather from the level above) times
  its local ones, one batched MatMul per level;
- vertices (optional) are linear blend skinning of `v_template + beta @ shapedirs` plus the pose
  blend shapes `(R_1..23 - I) @ posedirs`, which are left out when the file's are all zero
  (anny-smpl), exactly as they contribute nothing there.

Outputs are smplx's: `joints` are the 24 posed SMPL joints (`smplx.SMPL(...).joints[:, :24]`),
`vertices` its vertices, both in the body model's frame (no translation).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

NUM_JOINTS = 24


def tree_levels(parents: Sequence[int]) -> List[List[int]]:
    """Joints grouped by depth in the tree, root first: parents[j] < j, parents[0] = -1."""
    depth = [0] * len(parents)
    for j in range(1, len(parents)):
        if not 0 <= parents[j] < j:
            raise ValueError(f"parents must list each joint's parent before it, got parents[{j}]={parents[j]}")
        depth[j] = depth[parents[j]] + 1
    return [[j for j in range(len(parents)) if depth[j] == d] for d in range(max(depth) + 1)]


def posed_chain(rotmat: torch.Tensor, offsets: torch.Tensor, levels: Sequence[Sequence[int]],
                parent_slots: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Global rotations `BxJx3x3` and positions `BxJx3`, in level order (joints of `levels` concatenated).

    rotmat: `BxJx3x3` local rotations, offsets: `BxJx3` rest offsets from the parent (the root's
    is its position), both in level order; parent_slots[l]: each level-l joint's index within
    level l-1 (unused for l = 0). Each joint's local transform is a 4x4 [R, offset; 0, 1], so a
    level is one Gather of its parents' global transforms and one MatMul.
    """
    local = torch.cat([rotmat, offsets.unsqueeze(-1)], dim=-1)  # BxJx3x4
    local = torch.nn.functional.pad(local, (0, 0, 0, 1)) + HOMOGENEOUS_ROW.to(local)  # BxJx4x4
    sizes = [len(level) for level in levels]
    parts = torch.split(local, sizes, dim=1)
    glob = [parts[0]]
    for level in range(1, len(levels)):
        glob.append(torch.matmul(glob[-1].index_select(1, parent_slots[level]), parts[level]))
    glob_all = torch.cat(glob, dim=1)
    return glob_all[..., :3, :3], glob_all[..., :3, 3]


HOMOGENEOUS_ROW = torch.zeros(4, 4)
HOMOGENEOUS_ROW[3, 3] = 1.0


class ExportBody(nn.Module):
    """rotmat `Bx24x3x3` + betas `BxS` -> joints `Bx24x3` (and vertices `BxVx3`), as smplx computes them.

    Built from a loaded `training.body.body_model.BodyModel` (its smplx buffers are the source of
    truth, so the graph uses exactly the arrays training used).
    """

    def __init__(self, body_model: nn.Module, vertices: bool = False) -> None:
        super().__init__()
        smpl = body_model.smpl
        parents = [int(p) for p in smpl.parents.tolist()]
        parents[0] = -1
        self.levels = tree_levels(parents)
        order = [j for level in self.levels for j in level]
        position = {j: i for i, j in enumerate(order)}
        within = {j: i for level in self.levels for i, j in enumerate(level)}
        self.register_buffer("level_order", torch.tensor(order, dtype=torch.long), persistent=False)
        self.register_buffer("smpl_order", torch.tensor([position[j] for j in range(len(order))]),
                             persistent=False)
        for level in range(1, len(self.levels)):
            slots = torch.tensor([within[parents[j]] for j in self.levels[level]], dtype=torch.long)
            self.register_buffer(f"parent_slots_{level}", slots, persistent=False)

        num_betas = int(smpl.shapedirs.shape[-1])
        self.num_betas = num_betas
        v_template = smpl.v_template.double()  # Vx3
        shapedirs = smpl.shapedirs.double()  # Vx3xS
        regressor = smpl.J_regressor.double()  # JxV
        j_template = regressor @ v_template  # Jx3
        j_dirs = torch.einsum("jv,vcs->jcs", regressor, shapedirs)  # Jx3xS
        parent_index = torch.tensor([max(p, 0) for p in parents])
        is_child = torch.tensor([p >= 0 for p in parents], dtype=torch.float64)[:, None]
        rel_template = j_template - is_child * j_template[parent_index]
        rel_dirs = j_dirs - is_child[..., None] * j_dirs[parent_index]
        # level order, flattened: offsets = rel_template + betas @ rel_dirs
        self.register_buffer("rel_template", rel_template[order].float().reshape(1, -1))  # 1x(J*3)
        self.register_buffer("rel_dirs", rel_dirs[order].permute(2, 0, 1).reshape(num_betas, -1).float())
        self.with_vertices = vertices
        self.num_vertices = int(v_template.shape[0])
        self.has_pose_blend_shapes = bool(smpl.posedirs.abs().max() > 0)
        if vertices:
            self.register_buffer("rest_joints", j_template[order].float().reshape(1, -1))  # level order
            self.register_buffer("joint_dirs", j_dirs[order].permute(2, 0, 1).reshape(num_betas, -1).float())
            # mesh arrays coordinate-major (all x, then y, then z) for `skin`
            self.register_buffer("v_template", v_template.T.reshape(1, -1).float())  # 1x(3*V)
            self.register_buffer("shapedirs", shapedirs.permute(2, 1, 0).reshape(num_betas, -1).float())
            self.register_buffer("skin_weights", smpl.lbs_weights.float()[:, order].T.contiguous())  # JxV
            if self.has_pose_blend_shapes:  # smplx: 207x(V*3) vertex-major, SMPL joint order
                posedirs = smpl.posedirs.reshape(-1, self.num_vertices, 3).permute(0, 2, 1)
                self.register_buffer("posedirs", posedirs.reshape(posedirs.shape[0], -1).float())

    def parent_slots(self) -> List[torch.Tensor]:
        return [self.level_order[:0]] + [getattr(self, f"parent_slots_{l}") for l in range(1, len(self.levels))]

    def forward(self, rotmat: torch.Tensor, betas: torch.Tensor) -> Dict[str, torch.Tensor]:
        """`joints` Bx24x3 and, when built with vertices, `vertices` BxVx3."""
        batch = rotmat.shape[0]
        local = rotmat.index_select(1, self.level_order)
        offsets = torch.addmm(self.rel_template, betas, self.rel_dirs).reshape(batch, NUM_JOINTS, 3)
        glob_r, glob_t = posed_chain(local, offsets, self.levels, self.parent_slots())
        out = {"joints": glob_t.index_select(1, self.smpl_order)}
        if self.with_vertices:
            out["vertices"] = self.skin(rotmat, betas, glob_r, glob_t)
        return out

    def skin(self, rotmat: torch.Tensor, betas: torch.Tensor, glob_r: torch.Tensor,
             glob_t: torch.Tensor) -> torch.Tensor:
        """Linear blend skinning: `BxVx3` from the posed chain (level order) and the shaped mesh.

        Coordinate-major (`Bx3xV`) until the end, so that blending the 3x4 transforms with [v, 1] is
        a few elementwise ops on contiguous rows (ONNX Runtime's inner-axis broadcasts and batched
        3x3 MatMuls per vertex are several times slower).
        """
        batch, verts = rotmat.shape[0], self.num_vertices
        rest = torch.addmm(self.rest_joints, betas, self.joint_dirs).reshape(batch, NUM_JOINTS, 3, 1)
        shift = glob_t.unsqueeze(-1) - torch.matmul(glob_r, rest)  # BxJx3x1: rest joints to posed
        transforms = torch.cat([glob_r, shift], dim=-1).reshape(batch, NUM_JOINTS, 12).transpose(1, 2)
        blended = torch.matmul(transforms, self.skin_weights).reshape(batch, 3, 4, verts)  # rows [R_i, t_i]
        shaped = torch.addmm(self.v_template, betas, self.shapedirs)  # Bx(3*V), coordinate-major
        if self.has_pose_blend_shapes:
            eye = torch.eye(3, dtype=rotmat.dtype, device=rotmat.device)
            feature = (rotmat[:, 1:] - eye).reshape(batch, -1)  # Bx207
            shaped = torch.addmm(shaped, feature, self.posedirs)
        shaped = shaped.reshape(batch, 1, 3, verts)
        out = (blended[:, :, 0] * shaped[:, :, 0] + blended[:, :, 1] * shaped[:, :, 1]
               + blended[:, :, 2] * shaped[:, :, 2] + blended[:, :, 3])  # Bx3xV
        return out.transpose(1, 2)


def faces_array(body_model: nn.Module) -> np.ndarray:
    """The mesh's triangles `Fx3` int32."""
    return np.ascontiguousarray(body_model.faces, dtype=np.int32)


DISPLAY_MESH_FACES = 2000  # triangles of the display mesh: ~6,000 marker points a person, not ~80,000


def display_faces(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> np.ndarray:
    """A decimated mesh for display, `Fx3` int32 indices into the *full* mesh's vertices, so it
    follows every pose the full mesh takes: quadric edge collapses (fast-simplification) of the
    `Vx3` rest mesh, each removed vertex replaced by the vertex it collapsed into; faces that
    degenerate or repeat are dropped, the others keep their winding."""
    import fast_simplification

    faces = np.asarray(faces, dtype=np.int32)
    if not 0 < target_faces < len(faces):
        raise ValueError(f"target_faces must be in 1..{len(faces) - 1}, got {target_faces}")
    _, _, collapses = fast_simplification.simplify(np.asarray(vertices, np.float64), faces,
                                                   target_count=int(target_faces), return_collapses=True)
    survivor = np.arange(len(vertices))
    for kept, removed in np.asarray(collapses, dtype=np.int64).reshape(-1, 2):
        survivor[removed] = kept
    while True:  # a vertex may have collapsed into one that collapsed later
        followed = survivor[survivor]
        if np.array_equal(followed, survivor):
            break
        survivor = followed
    mapped = survivor[faces]
    distinct = (mapped[:, 0] != mapped[:, 1]) & (mapped[:, 1] != mapped[:, 2]) & (mapped[:, 0] != mapped[:, 2])
    mapped = mapped[distinct]
    _, first = np.unique(np.sort(mapped, axis=1), axis=0, return_index=True)
    return np.ascontiguousarray(mapped[np.sort(first)], dtype=np.int32)
