"""Training side of hkmr_ros (PyTorch): body model, networks, data, losses, training, evaluation."""
