"""Persistence: SQLAlchemy Core tables, one implementation for SQLite and PostgreSQL."""
