"""Model loading and generation: resolve a model, decide how to load it, load it, run it."""
