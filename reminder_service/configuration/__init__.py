"""Clinic and protocol configuration from YAML; errors name the file, the item and the field."""
