"""StarCoder Playground entry point: settings -> engine -> web app -> serve.

python app.py [--host H] [--port P] [--model PATH_OR_HF_ID] ...   (see --help)
"""

from __future__ import annotations

import logging
import os
import signal
import sys

# Gradio reports usage to a server at start-up unless told not to.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv: list[str] | None = None) -> int:
    from app.settings import EMBEDDED_MODEL, Settings

    settings = Settings.load(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from app.server import build_app, build_engines, open_attribution, serve

    # uvicorn re-raises the SIGTERM it shut down for; the default action would kill us before
    # the `finally` below stops the model workers, so SIGTERM ends in SystemExit instead.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    engines = build_engines(settings)
    registry = engines.registry
    # Workers load their models in their own processes while this one builds the web app.
    fim_default = registry.default_for("fim")
    engines.warm([fim_default, *(registry.default_for(m) for m in ("completion", "assistant"))])
    # The page is served at once; if the default model, or the one MODEL_ID names, cannot load,
    # the server stops with the reason (other models keep warming up in the background).
    required = {fim_default}
    if settings.model != EMBEDDED_MODEL:
        required.add(registry.default_for("completion"))

    def check() -> None:
        for model_id in sorted(required):
            engines.get(registry.get(model_id))

    try:
        built = build_app(settings, engines, open_attribution(settings))
        ok = serve(built.fastapi, settings, startup_check=check)
    finally:
        engines.close()
    return 0 if ok else 2


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
