"""The body model's joints without its mesh: what the training losses need, at a fraction of the cost.

The losses use joint sets (spin24, h36m17, lsp14, ...) built from SMPL's 24 posed joints, smplx's 21
vertex keypoints and the head-top vertex (`training.body.joint_sets`). None of them needs the whole
skinned mesh:

- the rest joints regress from the shaped template, which is linear in the betas, so
  `J(betas) = J_regressor @ v_template + (J_regressor @ shapedirs) betas` is precomputed as a 24x3
  template plus 24x3xS directions;
- the posed joints are forward kinematics of the rest joints (smplx's `batch_rigid_transform`);
- the 22 keypoint vertices are skinned alone: shaped, plus their rows of the pose blend shapes
  (zero for anny-smpl, SMPL's own for an SMPL file), then blended by their skinning weights.

Every step is the same maths as smplx's `lbs`, restricted to those rows, so the joints equal the full
model's (tests/test_joints_only.py) while the skinning of the other vertices and the 207 x 3V pose
blend-shape product (its largest cost, and its backward pass) disappear.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues
from torch import nn

from training.body.joint_sets import JOINT_SETS

NUM_JOINTS = 24


@dataclass
class JointsOutput:
    """joints Bx24x3 (SMPL's posed joints), keypoints Bx45x3 (smplx's `joints` output: the 24
    joints then the vertex keypoints), head_top Bx1x3."""
    joints: torch.Tensor
    keypoints: torch.Tensor
    head_top: torch.Tensor


class JointsOnlyBody(nn.Module):
    """`forward(pose, betas)` and `joint_set(name, out)` of `BodyModel`, computing joints only.

    body_model: `training.body.body_model.BodyModel`; its buffers are copied (frozen).
    """

    def __init__(self, body_model: nn.Module):
        super().__init__()
        smpl = body_model.smpl
        self.num_betas = int(body_model.num_betas)
        selected = torch.cat([smpl.vertex_joint_selector.extra_joints_idxs.long(),
                              torch.tensor([int(body_model.head_top_vertex)])])
        v_template = smpl.v_template.detach().float()  # V x 3
        shapedirs = smpl.shapedirs.detach().float()[..., : self.num_betas]  # V x 3 x S
        regressor = smpl.J_regressor.detach().float()  # 24 x V
        num_vertices = v_template.shape[0]
        posedirs = smpl.posedirs.detach().float().reshape(-1, num_vertices, 3)  # 207 x V x 3
        self.register_buffer("joint_template", regressor @ v_template)  # 24 x 3
        self.register_buffer("joint_dirs", torch.einsum("jv,vcs->jcs", regressor, shapedirs))  # 24 x 3 x S
        self.register_buffer("vertex_template", v_template[selected])  # K x 3
        self.register_buffer("vertex_dirs", shapedirs[selected])  # K x 3 x S
        self.register_buffer("vertex_posedirs", posedirs[:, selected].reshape(posedirs.shape[0], -1))  # 207 x 3K
        self.register_buffer("vertex_weights", smpl.lbs_weights.detach().float()[selected])  # K x 24
        self.register_buffer("parents", smpl.parents.detach().clone())
        self.has_pose_blendshapes = bool(self.vertex_posedirs.abs().max() > 0)
        for name in JOINT_SETS:
            self.register_buffer(f"joint_set_{name}", getattr(body_model, f"joint_set_{name}").clone(),
                                 persistent=False)
        self.requires_grad_(False)

    def forward(self, pose: torch.Tensor, betas: torch.Tensor) -> JointsOutput:
        """pose: Bx24x3x3 rotation matrices or Bx72 / Bx24x3 axis-angle; betas: Bxnum_betas."""
        if betas.dim() != 2 or betas.shape[1] != self.num_betas:
            raise ValueError(f"betas must be Bx{self.num_betas}, got {tuple(betas.shape)}")
        batch = pose.shape[0]
        if pose.dim() == 4 and pose.shape[1:] == (NUM_JOINTS, 3, 3):
            rotmats = pose
        elif pose.shape[1:] in ((NUM_JOINTS * 3,), (NUM_JOINTS, 3)):
            rotmats = batch_rodrigues(pose.reshape(-1, 3)).reshape(batch, NUM_JOINTS, 3, 3)
        else:
            raise ValueError(f"pose must be Bx72, Bx24x3 or Bx24x3x3, got {tuple(pose.shape)}")
        rest_joints = self.joint_template + torch.einsum("jcs,bs->bjc", self.joint_dirs, betas)
        joints, transforms = batch_rigid_transform(rotmats, rest_joints, self.parents, dtype=rotmats.dtype)
        vertices = self.vertex_template + torch.einsum("kcs,bs->bkc", self.vertex_dirs, betas)
        if self.has_pose_blendshapes:
            eye = torch.eye(3, dtype=rotmats.dtype, device=rotmats.device)
            pose_feature = (rotmats[:, 1:] - eye).reshape(batch, -1)
            vertices = vertices + (pose_feature @ self.vertex_posedirs).reshape(batch, -1, 3)
        blend = torch.einsum("kj,bjmn->bkmn", self.vertex_weights, transforms)  # B x K x 4 x 4
        posed = torch.einsum("bkmn,bkn->bkm", blend[..., :3, :3], vertices) + blend[..., :3, 3]
        keypoints = torch.cat([joints, posed[:, :-1]], dim=1)
        return JointsOutput(joints=joints, keypoints=keypoints, head_top=posed[:, -1:])

    def joint_set(self, name: str, out: JointsOutput) -> torch.Tensor:
        """BxJx3 joints of a named set, as `BodyModel.joint_set`."""
        if name not in JOINT_SETS:
            raise ValueError(f"unknown joint set {name!r}; known joint sets: {', '.join(JOINT_SETS)}")
        keypoints = torch.cat([out.keypoints, out.head_top], dim=1)
        return torch.einsum("jk,bkc->bjc", getattr(self, f"joint_set_{name}"), keypoints)
