"""HTTP entry points (FastAPI): health and provider webhooks. They only translate."""
