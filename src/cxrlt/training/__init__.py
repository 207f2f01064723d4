"""Training engine: Lightning glue, stages, optimisers, export."""
