"""Patient reminder service."""
