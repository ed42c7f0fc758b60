"""Networks: encoders, the HKMR and HMR regressors, the pose discriminator and the VAE prior."""
