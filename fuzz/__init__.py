"""Coverage-guided fuzz targets for the parsers of network input (docs/fuzzing.md)."""
