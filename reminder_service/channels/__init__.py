"""Delivery channels behind one small port; the file outbox is the default."""
