"""hkmr_ros runtime (torch-free). Kept empty so that the rosidl-generated hkmr_ros.msg stays visible."""
