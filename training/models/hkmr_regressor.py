"""HKMR's hierarchical kinematic regressor (Georgakis et al., ECCV 2020, section 3.2).

Pose is regressed chain by chain and, within a chain, joint by joint:

- Each chain c has a network Q_c: an embedding E_c giving psi = E_c(Phi, beta, theta_c) in R^d
  (the five child chains also see the current theta_root), and one fully-connected layer per
  joint. A *forward pass* predicts the update of joint i from [psi, dtheta_{i-1}, ..., dtheta_0]
  (layer f_i; the first joint gets [psi, 0]); then theta <- theta + dtheta and psi is recomputed.
  A *backward pass* does the same from the last joint to the first with its own layers b_i.
- Inner iterations count passes: inner_iters=4 runs forward, backward, forward, backward (the
  paper's best, its Table 3 counts a forward and a backward pass as two inner steps). With
  `backward_pass=False` every pass is a forward pass.
- Outer iterations (T): the root chain is refined first; the five child chains then take the new
  theta_root; a shape network gives beta^t = beta^{t-1} + g(beta^{t-1}, Theta^t, Phi) and a camera
  network (s, tx, ty) = mean + h(Theta^t, beta^t, Phi). Everything starts from the mean parameters.
- The same E_c, f_i and b_i are used at every inner and outer iteration (the paper's iterations
  are a learned iterative solver, as in HMR's error feedback).

Speed: the five child chains are independent given theta_root, so their parameters are stacked
along a leading chain axis and padded to the longest chain (5 joints); one `baddbmm` evaluates a
joint layer of all five chains, padded joints are masked. The image-feature part of every E_c is
linear in Phi, which does not change across iterations, so it is computed once per image.
`forward_reference` runs the same parameters chain by chain without padding, for testing.

Collapsed passes: a joint layer is affine with no activation, and within a pass psi is fixed, so
by induction every update of a pass is affine in psi: dtheta_i = psi A_i + c_i with
A_i = W_i^psi + sum_k A_{i-k} W_i^k and c_i = b_i + sum_k c_{i-k} W_i^k (W_i^k the rows of W_i
that read dtheta_{i-k}). A whole pass, its backward reordering and the padding mask included, is
one matrix on [psi, 1] (`ChainGroup.collapsed_pass`), so an inner iteration costs two matmuls
(embedding, pass) whatever the chain length. The matrices are computed from the parameters
(differentiably, a few tiny matmuls; reused while the parameters do not change when autograd is
off) and in an exported graph they fold into constants. The collapsed path also projects Phi for
all chains as one 2-D GEMM and computes Phi's part of the shape and camera networks once, not per
outer iteration. `forward` uses the collapsed passes in training too (equal to the joint-by-joint
computation to float rounding, ~1e-6, gradients included; a training step's regressor forward and
backward pass about 1.7x faster on a CPU). `forward_stepwise` is the joint-by-joint computation,
the reference.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from training.body.chains import CHAINS, CHILD_CHAIN_NAMES, NUM_JOINTS, chain_indices, padded_child_chains
from training.models.mean_params import SMALL_GAIN, NUM_BETAS, mean_params, regressor_outputs, rotation_dim


def cached_compute(cache: Dict[tuple, object], key: tuple, tensors: Sequence[torch.Tensor], compute):
    """compute(), reused while none of `tensors` changed, when autograd is off (inference).

    A trace (ONNX export) always computes, so the exporter folds the result from the parameters.
    """
    if torch.is_grad_enabled() or torch.jit.is_tracing():
        return compute()
    key = key + tuple((t.data_ptr(), t._version, t.device, t.dtype) for t in tensors)
    cached = cache.get(key)
    if cached is None:
        if len(cache) > 32:
            cache.clear()
        cached = cache[key] = compute()
    return cached


def small_xavier_(weight: torch.Tensor, fan_in: int, fan_out: int, gain: float = SMALL_GAIN) -> None:
    """Xavier-uniform with a small gain, for weights stored with extra leading (chain) axes."""
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class ChainGroup(nn.Module):
    """The networks Q_c of several chains, parameters stacked on a leading chain axis C.

    Chains are padded to the longest, K joints, base first. A chain's pose is `CxBxKxR`
    (R = 3 axis-angle or 6 for 6-D). `context` is what every chain of the group sees besides Phi
    and its own pose: beta for the root chain, [beta, theta_root] for the child chains.
    """

    def __init__(
        self,
        chain_lengths: Sequence[int],
        feat_dim: int,
        context_dim: int,
        rot_dim: int,
        embed_dim: int,
        joint_hierarchy: bool,
        backward_pass: bool,
    ) -> None:
        super().__init__()
        num_chains, length = len(chain_lengths), max(chain_lengths)
        self.chain_lengths = tuple(chain_lengths)
        self.length = length
        self.context_dim = context_dim
        self.rot_dim = rot_dim
        self.embed_dim = embed_dim
        self.joint_hierarchy = joint_hierarchy
        self.backward_pass = backward_pass
        self.padded = len(set(chain_lengths)) > 1
        # E_c: psi = relu(W_phi Phi + W_state [context, theta_c] + b), split so W_phi Phi is computed once.
        self.state_dim = context_dim + length * rot_dim
        self.phi_weight = nn.Parameter(torch.empty(num_chains, feat_dim, embed_dim))
        self.state_weight = nn.Parameter(torch.empty(num_chains, self.state_dim, embed_dim))
        self.embed_bias = nn.Parameter(torch.empty(num_chains, 1, embed_dim))
        # f_i / b_i: joint i of a pass reads [psi, dtheta_{i-1}, ..., dtheta_0] (first joint: [psi, 0]),
        # or only [psi, dtheta_{i-1}] without the joint hierarchy.
        self.in_dims = [embed_dim + rot_dim * (max(i, 1) if joint_hierarchy else 1) for i in range(length)]
        self.forward_weights, self.forward_biases = self._joint_layers(num_chains)
        if backward_pass:
            self.backward_weights, self.backward_biases = self._joint_layers(num_chains)
        lengths = torch.tensor(self.chain_lengths)
        positions = torch.arange(length)
        real = positions[None, :] < lengths[:, None]  # CxK
        self.register_buffer("mask", real.float()[:, None, :, None], persistent=False)  # Cx1xKx1
        # A backward pass visits chain position K_c-1-j at its step j; `reverse` (Cx1xKxK) maps
        # updates from pass order back to chain order (padded positions stay in place).
        pass_position = torch.where(real, lengths[:, None] - 1 - positions[None, :], positions[None, :])
        reverse = nn.functional.one_hot(pass_position, length).float()
        self.register_buffer("reverse", reverse[:, None], persistent=False)
        self._pass_cache: Dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    def _joint_layers(self, num_chains: int) -> tuple[nn.ParameterList, nn.ParameterList]:
        weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_chains, n, self.rot_dim)) for n in self.in_dims)
        biases = nn.ParameterList(
            nn.Parameter(torch.zeros(num_chains, 1, self.rot_dim)) for _ in self.in_dims)
        return weights, biases

    def reset_parameters(self) -> None:
        fan_in = self.phi_weight.shape[1] + self.state_dim  # as nn.Linear over the concatenation
        bound = 1.0 / math.sqrt(fan_in)
        for p in (self.phi_weight, self.state_weight, self.embed_bias):
            nn.init.uniform_(p, -bound, bound)
        layers = [self.forward_weights] + ([self.backward_weights] if self.backward_pass else [])
        for weights in layers:
            for w, n in zip(weights, self.in_dims):
                small_xavier_(w, n, self.rot_dim)

    def state_from_full(self, state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
        """This group's entries of a full group's state dict (hierarchy, backward passes), ablated to
        this group: without the hierarchy each joint layer keeps its rows for psi and the latest
        update (a full layer's first rows, `joint_update`'s order), forward only drops the backward
        layers. Every other entry is kept as it is."""
        out = {}
        for key, value in state.items():
            layers, _, index = (key[len(prefix):] if key.startswith(prefix) else "").partition(".")
            if layers.startswith("backward_") and not self.backward_pass:
                continue
            if layers in ("forward_weights", "backward_weights"):
                value = value[:, : self.in_dims[int(index)]]
            out[key] = value
        return out

    def unused_parameter_count(self) -> int:
        """Parameters of padded joint slots, which padding keeps but no chain uses."""
        passes = 2 if self.backward_pass else 1
        unused = 0
        for k in self.chain_lengths:
            unused += (self.length - k) * self.rot_dim * self.embed_dim  # E_c rows of padded joints
            unused += passes * sum((n + 1) * self.rot_dim for n in self.in_dims[k:])
        return unused

    def project_features(self, features: torch.Tensor, flat: bool = False) -> torch.Tensor:
        """The image-feature term of every E_c: `BxF` -> `CxBxd`.

        flat: as one `Fx(C*d)` matrix product (one GEMM for all chains, what inference graphs want;
        a broadcast batched product is several times slower in ONNX Runtime), equal to rounding.
        """
        if not flat:
            return torch.matmul(features, self.phi_weight)
        chains, feat_dim, embed_dim = self.phi_weight.shape
        weight = cached_compute(self._pass_cache, ("phi",), [self.phi_weight],
                                lambda: self.phi_weight.permute(1, 0, 2).reshape(feat_dim, chains * embed_dim))
        return torch.matmul(features, weight).reshape(-1, chains, embed_dim).transpose(0, 1)

    def embed(self, phi_proj: torch.Tensor, context: torch.Tensor, theta: torch.Tensor,
              chains: slice, length: int) -> torch.Tensor:
        """psi = E_c(Phi, context, theta_c): `CxBxd` from `CxBxd`, `CxBxM`, `CxBxKxR`."""
        state = torch.cat([context, theta.flatten(2)], dim=-1)
        weight = self.state_weight[chains, : self.context_dim + length * self.rot_dim]
        return torch.relu(torch.baddbmm(phi_proj + self.embed_bias[chains], state, weight))

    def joint_update(self, psi: torch.Tensor, previous: List[torch.Tensor], position: int,
                     backward: bool, chains: slice = slice(None)) -> torch.Tensor:
        """dtheta of the joint at step `position` of a pass: `CxBxR`.

        previous: this pass's updates of the steps before, oldest first (each `CxBxR`).
        """
        earlier = previous[::-1] if self.joint_hierarchy else previous[-1:]
        if not earlier:
            earlier = [torch.zeros_like(psi[..., : self.rot_dim])]
        weights, biases = ((self.backward_weights, self.backward_biases) if backward
                           else (self.forward_weights, self.forward_biases))
        x = torch.cat([psi, *earlier], dim=-1)
        return torch.baddbmm(biases[position][chains], x, weights[position][chains])

    def pass_updates(self, psi: torch.Tensor, backward: bool, length: int,
                     chains: slice = slice(None)) -> torch.Tensor:
        """All joint updates of one pass, each conditioned on the earlier ones: `CxBxKxR`, pass order."""
        updates: List[torch.Tensor] = []
        for position in range(length):
            updates.append(self.joint_update(psi, updates, position, backward, chains))
        return torch.stack(updates, dim=2)

    def collapsed_pass(self, backward: bool, chains: slice = slice(None), length: Optional[int] = None,
                       reverse: Optional[torch.Tensor] = None,
                       mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass as an affine map of psi, in chain order: (A `Cxdx(K*R)`, c `Cx1x(K*R)`).

        The updates a pass adds to theta (flattened `CxBx(K*R)`) are `psi @ A + c`: the joint layers
        composed (see the module docstring), then the backward pass's reordering `reverse`
        (`Cx1xKxK`, chain position <- pass step) and the padding `mask` (`Cx1xKx1`) applied to A, c.
        """
        length = self.length if length is None else length
        weights, biases = ((self.backward_weights, self.backward_biases) if backward
                           else (self.forward_weights, self.forward_biases))
        tensors = [*weights, *biases] + [t for t in (reverse, mask) if t is not None]
        return cached_compute(self._pass_cache, ("pass", backward, chains.start, chains.stop, length), tensors,
                              lambda: self._compose_pass(weights, biases, chains, length, reverse, mask, backward))

    def _compose_pass(self, weights: nn.ParameterList, biases: nn.ParameterList, chains: slice, length: int,
                      reverse: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                      backward: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The composition behind `collapsed_pass`."""
        d, r = self.embed_dim, self.rot_dim
        maps: List[torch.Tensor] = []  # [A_i; c_i], each Cx(d+1)xr: one product composes both
        for i in range(length):
            weight = weights[i][chains]
            affine = torch.cat([weight[:, :d], biases[i][chains]], dim=1)
            earlier = range(i - 1, -1, -1) if self.joint_hierarchy else range(i - 1, max(i - 2, -1), -1)
            for k, j in enumerate(earlier):  # rows d + k*r.. read dtheta_j, the (k+1)-th most recent
                affine = torch.baddbmm(affine, maps[j], weight[:, d + k * r: d + (k + 1) * r])
            maps.append(affine)
        stacked = torch.stack(maps, dim=2)  # Cx(d+1)xKxr
        mat, offset = stacked[:, :d], stacked[:, d:]  # CxdxKxr, Cx1xKxr
        if backward:
            mat, offset = torch.matmul(reverse, mat), torch.matmul(reverse, offset)
        if mask is not None:
            mat, offset = mat * mask, offset * mask
        return mat.flatten(2), offset.flatten(2)

    def collapsed_plan(self, inner_iters: int, context_dim: int, chains: slice = slice(None),
                       length: Optional[int] = None, reverse: Optional[torch.Tensor] = None,
                       mask: Optional[torch.Tensor] = None) -> tuple:
        """What the collapsed inner iterations need, computed once per forward: the embedding's
        context rows `CxMxd` and theta rows `Cx(K*R)xd`, and per inner iteration its pass (A, c)."""
        length = self.length if length is None else length
        weight = self.state_weight[chains, : context_dim + length * self.rot_dim]
        passes = {False: self.collapsed_pass(False, chains, length, reverse, mask)}
        if self.backward_pass and inner_iters > 1:
            passes[True] = self.collapsed_pass(True, chains, length, reverse, mask)
        steps = [passes[self.backward_pass and k % 2 == 1] for k in range(inner_iters)]
        return weight[:, :context_dim], weight[:, context_dim:], steps

    def _refine_collapsed(self, phi_proj: torch.Tensor, context: torch.Tensor, theta: torch.Tensor,
                          chains: slice, plan: tuple) -> torch.Tensor:
        """As `_refine` with collapsed passes (`plan` from `collapsed_plan`); the context part of psi
        is computed once."""
        context_weight, theta_weight, steps = plan
        base = torch.baddbmm(phi_proj + self.embed_bias[chains], context, context_weight)
        flat = theta.flatten(2)  # CxBx(K*R)
        if flat.shape[0] == 1:  # one chain (the root): 2-D products, i.e. Gemm (+ ReLU) in a graph
            base, flat, theta_weight = base[0], flat[0], theta_weight[0]
            for mat, offset in steps:
                psi = torch.relu(torch.addmm(base, flat, theta_weight))
                flat = flat + torch.addmm(offset[0], psi, mat[0])
            return flat.reshape(theta.shape)
        for mat, offset in steps:
            psi = torch.relu(torch.baddbmm(base, flat, theta_weight))
            flat = flat + torch.baddbmm(offset, psi, mat)
        return flat.reshape(theta.shape)

    def _refine(self, phi_proj: torch.Tensor, context: torch.Tensor, theta: torch.Tensor,
                inner_iters: int, chains: slice, length: int, reverse: torch.Tensor,
                mask: Optional[torch.Tensor], collapsed: bool = False, plan: Optional[tuple] = None) -> torch.Tensor:
        if collapsed:
            if plan is None:
                plan = self.collapsed_plan(inner_iters, context.shape[-1], chains, length, reverse, mask)
            return self._refine_collapsed(phi_proj, context, theta, chains, plan)
        for step in range(inner_iters):
            backward = self.backward_pass and step % 2 == 1
            psi = self.embed(phi_proj, context, theta, chains, length)
            updates = self.pass_updates(psi, backward, length, chains)
            if backward:
                updates = torch.matmul(reverse, updates)
            theta = theta + (updates if mask is None else updates * mask)
        return theta

    def refine(self, phi_proj: torch.Tensor, context: torch.Tensor, theta: torch.Tensor,
               inner_iters: int, collapsed: bool = False, plan: Optional[tuple] = None) -> torch.Tensor:
        """The inner iterations of all chains at once: theta `CxBxKxR` (padded) -> refined.

        plan: `group_plan(...)`, to share one set of collapsed matrices between outer iterations.
        """
        return self._refine(phi_proj, context, theta, inner_iters, slice(None), self.length,
                            self.reverse, self.mask if self.padded else None, collapsed, plan)

    def group_plan(self, inner_iters: int) -> tuple:
        """`collapsed_plan` of the whole (padded) group."""
        return self.collapsed_plan(inner_iters, self.context_dim, reverse=self.reverse,
                                   mask=self.mask if self.padded else None)

    def refine_chain(self, chain: int, phi_proj: torch.Tensor, context: torch.Tensor,
                     theta: torch.Tensor, inner_iters: int, collapsed: bool = False) -> torch.Tensor:
        """Reference: chain `chain` alone and unpadded, theta `1xBxK_cxR`, same parameters."""
        length = self.chain_lengths[chain]
        flip = torch.eye(length, device=theta.device, dtype=theta.dtype).flip(0)
        chains = slice(chain, chain + 1)
        return self._refine(phi_proj[chains], context[chains], theta, inner_iters, chains, length,
                            flip, None, collapsed)


class HKMRRegressor(nn.Module):
    """Features `BxF` -> per outer iteration rotmat, axis-angle pose, betas and camera.

    Defaults (embed_dim=128, hidden=256) put a ResNet-50 HKMR at the paper's 26.2M parameters;
    the paper does not state them (see docs/model.md).
    """

    def __init__(
        self,
        feat_dim: int,
        inner_iters: int = 4,
        outer_iters: int = 3,
        embed_dim: int = 128,
        hidden_dim: int = 256,
        rotation: str = "aa",
        joint_hierarchy: bool = True,
        backward_pass: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("feat_dim", feat_dim), ("inner_iters", inner_iters),
                            ("outer_iters", outer_iters), ("embed_dim", embed_dim),
                            ("hidden_dim", hidden_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.rotation = rotation
        self.rot_dim = rot_dim = rotation_dim(rotation)
        self.inner_iters = inner_iters
        self.outer_iters = outer_iters
        root_length = len(CHAINS["root"])
        child_lengths = [len(CHAINS[c]) for c in CHILD_CHAIN_NAMES]
        self.root_chain = ChainGroup([root_length], feat_dim, NUM_BETAS, rot_dim, embed_dim,
                                     joint_hierarchy, backward_pass)
        self.child_chains = ChainGroup(child_lengths, feat_dim, NUM_BETAS + root_length * rot_dim,
                                       rot_dim, embed_dim, joint_hierarchy, backward_pass)
        head_in = feat_dim + NUM_JOINTS * rot_dim + NUM_BETAS
        self.shape_net = nn.Sequential(nn.Linear(head_in, hidden_dim), nn.ReLU(),
                                       nn.Linear(hidden_dim, NUM_BETAS))
        self.camera_net = nn.Sequential(nn.Linear(head_in, hidden_dim), nn.ReLU(),
                                        nn.Linear(hidden_dim, 3))
        for head in (self.shape_net[-1], self.camera_net[-1]):
            nn.init.xavier_uniform_(head.weight, gain=SMALL_GAIN)
            nn.init.zeros_(head.bias)

        mean = mean_params(rotation)
        self._head_cache: Dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.register_buffer("mean_pose_state", mean["pose_state"])  # 24xR
        self.register_buffer("mean_betas", mean["betas"])
        self.register_buffer("mean_cam", mean["cam"])
        self.register_buffer("root_joints", chain_indices("root"), persistent=False)
        child_joints, child_mask = padded_child_chains()
        self.register_buffer("child_joints", child_joints, persistent=False)  # 5x5
        self.register_buffer("child_joint_mask", child_mask.float(), persistent=False)
        # Where each SMPL joint sits among [root slots (4), child slots (5x5 padded)] ...
        slots = torch.cat([self.root_joints, child_joints.flatten()])
        real = torch.cat([torch.ones(root_length, dtype=torch.bool), child_mask.flatten()])
        joint_to_slot = torch.empty(NUM_JOINTS, dtype=torch.long)
        joint_to_slot[slots[real]] = torch.nonzero(real).flatten()
        self.register_buffer("joint_to_slot", joint_to_slot, persistent=False)
        # ... and among the unpadded chains concatenated (the reference path).
        chain_order = torch.cat([chain_indices(c) for c in ("root",) + CHILD_CHAIN_NAMES])
        self.register_buffer("joint_to_chain_position", torch.argsort(chain_order), persistent=False)

    def state_from_full(self, state: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, torch.Tensor]:
        """A full HKMR's state dict (keys under `prefix`) for this regressor, an ablation of it
        (`ChainGroup.state_from_full`); the iteration counts need nothing, every iteration uses
        the same layers. Loading it starts an ablation from a trained network."""
        for name in ("root_chain", "child_chains"):
            state = getattr(self, name).state_from_full(state, f"{prefix}{name}.")
        return state

    def forward(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """features `BxF` -> dict of `rotmat` BxTx24x3x3, `pose` BxTx72, `betas` BxTx10, `cam` BxTx3.

        With collapsed passes (see the module docstring).
        """
        return self._regress(features, batched_chains=True, collapsed=True)

    def forward_stepwise(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """As `forward`, joint by joint whatever the mode (the straightforward computation)."""
        return self._regress(features, batched_chains=True, collapsed=False)

    def forward_reference(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """As `forward`, with a plain loop over the five child chains (no padding); for tests."""
        return self._regress(features, batched_chains=False, collapsed=False)

    def final_estimate(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The last outer iteration only, as exported: `pose_state` Bx24xR, `betas` Bx10, `cam` Bx3.

        Same computation as `forward` without the rotation conversions of the earlier iterations.
        """
        states, betas, cams = self._iterate(features, batched_chains=True, collapsed=True)
        return {"pose_state": states[-1], "betas": betas[-1], "cam": cams[-1]}

    def _head_feature_terms(self, features: torch.Tensor) -> tuple:
        """The first layers of the shape and camera networks read [Phi, Theta, beta]; Phi's part
        (with the bias) does not change across outer iterations: both heads' as one GEMM. Per head
        (Phi's term `BxH`, the layer's other rows transposed `(24R+10)xH`)."""
        feat_dim = features.shape[-1]
        first = (self.shape_net[0], self.camera_net[0])

        def compute():
            return (torch.cat([layer.weight[:, :feat_dim] for layer in first]).t(),
                    torch.cat([layer.bias for layer in first]))

        weight, bias = cached_compute(self._head_cache, ("heads", feat_dim),
                                      [t for layer in first for t in (layer.weight, layer.bias)], compute)
        terms = torch.addmm(bias, features, weight).split([layer.out_features for layer in first], dim=-1)
        return tuple((term, layer.weight[:, feat_dim:].t()) for term, layer in zip(terms, first))

    @staticmethod
    def _head(net: nn.Sequential, head_term: tuple, rest: torch.Tensor) -> torch.Tensor:
        """net([Phi, rest]) from Phi's precomputed term and the first layer's other rows: Linear, ReLU, Linear."""
        feature_term, rest_weight = head_term
        return net[2](torch.relu(feature_term + torch.matmul(rest, rest_weight)))

    def _regress(self, features: torch.Tensor, batched_chains: bool, collapsed: bool) -> Dict[str, torch.Tensor]:
        return regressor_outputs(*self._iterate(features, batched_chains, collapsed), self.rotation)

    def _iterate(self, features: torch.Tensor, batched_chains: bool, collapsed: bool
                 ) -> tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """Per outer iteration: pose states Bx24xR, betas Bx10, cameras Bx3."""
        batch = features.shape[0]
        rot_dim = self.rot_dim
        phi_root = self.root_chain.project_features(features, flat=collapsed)  # 1xBxd
        phi_child = self.child_chains.project_features(features, flat=collapsed)  # 5xBxd
        head_terms = self._head_feature_terms(features) if collapsed else None
        # collapsed: one set of matrices for all outer iterations (one copy in an exported graph)
        root_plan = self.root_chain.group_plan(self.inner_iters) if collapsed and batched_chains else None
        child_plan = self.child_chains.group_plan(self.inner_iters) if collapsed and batched_chains else None
        theta_root = self.mean_pose_state[self.root_joints].expand(1, batch, -1, -1)
        if batched_chains:
            theta_child = (self.mean_pose_state[self.child_joints] * self.child_joint_mask[..., None])
            theta_child = theta_child.unsqueeze(1).expand(-1, batch, -1, -1)  # 5xBx5xR
        else:
            theta_chains = [self.mean_pose_state[chain_indices(c).to(features.device)].expand(1, batch, -1, -1)
                            for c in CHILD_CHAIN_NAMES]
        betas = self.mean_betas.expand(batch, -1)
        pose_states: List[torch.Tensor] = []
        all_betas: List[torch.Tensor] = []
        cams: List[torch.Tensor] = []
        for _ in range(self.outer_iters):
            theta_root = self.root_chain.refine(phi_root, betas.unsqueeze(0), theta_root, self.inner_iters,
                                                collapsed, root_plan)
            context = torch.cat([betas, theta_root[0].flatten(1)], dim=-1)  # Bx(10+4R)
            if batched_chains:
                theta_child = self.child_chains.refine(
                    phi_child, context.expand(theta_child.shape[0], -1, -1), theta_child, self.inner_iters,
                    collapsed, child_plan)
                slots = torch.cat([theta_root[0], theta_child.transpose(0, 1).flatten(1, 2)], dim=1)
                pose_state = slots.index_select(1, self.joint_to_slot)  # Bx24xR
            else:
                theta_chains = [
                    self.child_chains.refine_chain(c, phi_child, context.expand(len(theta_chains), -1, -1),
                                                   theta, self.inner_iters, collapsed)
                    for c, theta in enumerate(theta_chains)]
                ordered = torch.cat([theta_root[0]] + [theta[0] for theta in theta_chains], dim=1)
                pose_state = ordered.index_select(1, self.joint_to_chain_position)
            pose_flat = pose_state.reshape(batch, NUM_JOINTS * rot_dim)
            if head_terms is None:
                betas = betas + self.shape_net(torch.cat([features, pose_flat, betas], dim=-1))
                cam = self.mean_cam + self.camera_net(torch.cat([features, pose_flat, betas], dim=-1))
            else:
                betas = betas + self._head(self.shape_net, head_terms[0], torch.cat([pose_flat, betas], dim=-1))
                cam = self.mean_cam + self._head(self.camera_net, head_terms[1], torch.cat([pose_flat, betas], dim=-1))
            pose_states.append(pose_state)
            all_betas.append(betas)
            cams.append(cam)
        return pose_states, all_betas, cams
