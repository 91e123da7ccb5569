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
    from app.server import build_app, build_engines, open_attribution, serve
    from model.errors import PlaygroundError

    engines = build_engines(settings)
    registry = engines.registry
    try:
        # The FIM default starts now (a load failure is reported at once); the others warm up
        # in the background while the page is already served.
        engines.get(registry.get(registry.default_for("fim")))
    except PlaygroundError as exc:
        logging.getLogger("app").error("%s", exc)
        return 2
    engines.warm(registry.default_for(mode) for mode in ("completion", "assistant"))
    try:
        built = build_app(settings, engines, open_attribution(settings))
        serve(built.fastapi, settings)
    finally:
        engines.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
