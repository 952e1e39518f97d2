"""Knowledge-graph sources that produce the entities table."""
