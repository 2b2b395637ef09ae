"""An artifact's bytes: names, metadata, the streaming scan (zstd frames, gzip), age encryption."""
