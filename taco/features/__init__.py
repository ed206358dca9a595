"""Stage 1, CPU only: corpus -> text front end -> token IDs; audio -> normalized mel; the feature store."""
