"""What the web layer asks for, one service per action: generate, shares, search.

Nothing here knows about Gradio; app/web/ turns these into pages, endpoints and routes.
"""
