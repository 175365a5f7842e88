"""The embedded demo model: synthetic pictures, its training recipe, and a held-out test set."""
