"""From a user's folder to split manifests: sources, formats, the one decode function, the image
cache, ingest, validate and its report, split."""
