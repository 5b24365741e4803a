"""Graph analysis and surgery: cut points (decide), partition and codec nodes (rewrite)."""
