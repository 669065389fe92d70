"""Generated clips and helpers for the bundled demonstration model (numpy/PIL only: no torch here)."""
