"""Importers: bytes from a source system in, appointments and row errors out; parsing only."""
