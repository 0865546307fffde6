"""Features service: fractal (gliding-box) and deep CNN image features."""
