"""Is an adapter better? Side-by-side Compare with votes, and scored evaluation on eval sets."""
