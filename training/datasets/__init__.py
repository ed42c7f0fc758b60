"""Datasets: synthetic renders of the body model and SPIN-preprocessed real data."""
