"""cnnops: an end-to-end MLOps pipeline for image-classification CNNs."""

__version__ = "0.1.0"
