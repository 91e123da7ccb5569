"""Web layer of the StarCoder Playground. Never imports torch."""
