"""Person-centred crops in the SPIN/HMR convention (centre in pixels, scale = box side / 200).

The rules live in the runtime (`hkmr_ros.crops`, numpy + OpenCV only) so that the real-data
loaders, the synthetic generator and the robot frame people identically; training uses them from
there.
"""
from hkmr_ros.crops import (  # noqa: F401
    CROP_SIZE,
    SCALE_UNIT,
    box_to_center_scale,
    crop_image,
    crop_transform,
    denormalise_keypoints,
    normalise_keypoints,
    transform_points,
)
