"""Self Forcing DiT, UMT5 text encoder and Wan VAE in plain PyTorch."""
