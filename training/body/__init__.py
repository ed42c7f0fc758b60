"""Body model layer: SMPL's tree and chains, the SMPL-format model loader, the open default."""
