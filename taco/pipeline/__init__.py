"""Stage 2: the feature store -> batches -> Tacotron2 -> checkpoints; synthesis and alignment inspection."""
