"""Training a candidate: the job, its recipe, batchnorm recalibration, progress, checkpoints, the
sweep and distillation."""
