"""Loading clinic and protocol configuration from YAML, with errors that name file, item and field."""
