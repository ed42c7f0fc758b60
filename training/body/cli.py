"""`hkmr-body-model [--model PATH]`: describe the body model the code will use."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from training.body.body_model import ENV_VAR, BodyModelError, load_body_model


def describe(model) -> str:
    """Human-readable summary: sizes, file, licence and the height of the mean shape."""
    out = model.rest()
    heights = out.vertices[0, :, 1]
    return "\n".join([
        f"source file:      {model.source}",
        f"provenance:       {model.provenance}",
        f"licence:          {model.licence}",
        f"vertices:         {model.num_vertices}",
        f"faces:            {model.faces.shape[0]}",
        f"joints:           {out.joints.shape[1]} (plus {out.keypoints.shape[1] - out.joints.shape[1]} vertex keypoints)",
        f"shape components: {model.num_betas}",
        f"beta=0 height:    {float(heights.max() - heights.min()):.3f} m",
    ])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="hkmr-body-model", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None,
        help=f"SMPL-format .pkl/.npz (default: ${ENV_VAR}, else the shipped anny-smpl file)",
    )
    args = parser.parse_args(argv)
    try:
        model = load_body_model(args.model)
    except (FileNotFoundError, BodyModelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(describe(model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
