"""The cnnops pipeline: one factory, compiled to IR YAML, run by kfp.local or submitted to a cluster."""
