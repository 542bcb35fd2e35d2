"""What a served model needs, without TensorFlow: the served-model folder, the adaptive batcher and
the service client."""
