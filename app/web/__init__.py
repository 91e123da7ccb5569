"""The web layer: Gradio layout (ui.py), the named API (api.py), plain HTTP routes and the edge
guard. Thin: each handler parses its inputs, calls a service in app/services/, shapes the result."""
