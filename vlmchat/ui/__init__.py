"""The Gradio web UI. The only package that imports gradio; it knows nothing of torch."""
