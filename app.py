"""StarCoder Playground entry point: settings -> engine -> web app -> serve.

python app.py [--host H] [--port P] [--model PATH_OR_HF_ID] ...   (see --help)
"""

from __future__ import annotations

import logging
import os
import sys

# Gradio reports usage to a server at start-up unless told not to.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv: list[str] | None = None) -> int:
    from app.settings import Settings

    settings = Settings.load(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from app.server import build_app, open_attribution, serve
    from model.errors import PlaygroundError
    from model.local import LocalEngine

    try:
        engine = LocalEngine.load(
            settings.model, device=settings.device, hf_token=settings.hf_token
        )
    except PlaygroundError as exc:
        logging.getLogger("app").error("%s", exc)
        return 2
    built = build_app(settings, engine, open_attribution(settings))
    serve(built.fastapi, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
