"""HTTP routes, one module per resource; each handler validates, calls `IndexService`, and shapes JSON."""
