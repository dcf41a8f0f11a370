"""Training: configuration, the training loop, checkpoints, hardware detection, distributed data parallel."""
