"""Tests against the real parts: the tiny model, worker processes, the served app, gradio_client,
Chromium and PostgreSQL."""
