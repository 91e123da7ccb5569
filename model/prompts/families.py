"""Model families' special tokens and fill-in-the-middle formats, each written down once.

The runtime (prompts, the pool, the registry), training (tokenizer, packing) and evaluation all
read them from here. Pure data: torch-free and tokenizer-free.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# StarCoder's special tokens in its tokenizer's order: ids 0-18 (tiny-starcoder keeps them).
STARCODER_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<fim_prefix>",
    "<fim_middle>",
    "<fim_suffix>",
    "<fim_pad>",
    "<filename>",
    "<gh_stars>",
    "<issue_start>",
    "<issue_comment>",
    "<issue_closed>",
    "<jupyter_start>",
    "<jupyter_text>",
    "<jupyter_code>",
    "<jupyter_output>",
    "<empty_output>",
    "<commit_before>",
    "<commit_msg>",
    "<commit_after>",
    "<reponame>",
)
ENDOFTEXT, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD = STARCODER_SPECIAL_TOKENS[:5]
FILE_SEP = "<file_sep>"  # StarCoder2's file separator: its tokenizer's mark, and a stop

# Prefix-suffix-middle, the order every family here is prompted in.
PSM = "{pre}{prefix}{suf}{suffix}{mid}"


@dataclass(frozen=True)
class FimTemplate:
    family: str
    prefix_token: str
    suffix_token: str
    middle_token: str
    template: str  # str.format with prefix/suffix and the three tokens
    stop_tokens: tuple[str, ...]
    detect_also: tuple[str, ...] = ()  # tokens that tell this family from a look-alike

    def format(self, prefix: str, suffix: str) -> str:
        return self.template.format(
            pre=self.prefix_token,
            suf=self.suffix_token,
            mid=self.middle_token,
            prefix=prefix,
            suffix=suffix,
        )


STARCODER = FimTemplate("starcoder", FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE, PSM, (ENDOFTEXT,))
STARCODER2 = replace(
    STARCODER, family="starcoder2", stop_tokens=(ENDOFTEXT, FILE_SEP), detect_also=(FILE_SEP,)
)
SANTACODER = FimTemplate(
    "santacoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>", PSM, (ENDOFTEXT,)
)
CODELLAMA = FimTemplate(
    "codellama", "▁<PRE>", "▁<SUF>", "▁<MID>", "<PRE> {prefix} <SUF>{suffix} <MID>", ("<EOT>",)
)
DEEPSEEK_CODER = FimTemplate(
    "deepseek-coder",
    "<｜fim▁begin｜>",
    "<｜fim▁hole｜>",
    "<｜fim▁end｜>",
    PSM,
    ("<|EOT|>", "<｜end▁of▁sentence｜>"),
)

# Order matters: StarCoder2 is StarCoder's tokens plus <file_sep>, so it is tried first.
FIM_TEMPLATES: tuple[FimTemplate, ...] = (
    STARCODER2,
    STARCODER,
    SANTACODER,
    CODELLAMA,
    DEEPSEEK_CODER,
)


def _bare(token: str) -> str:
    """Code Llama's tokenizer registers its markers with or without the SentencePiece space."""
    return token.removeprefix("▁")


# Any one of these among a tokenizer's tokens means it can fill in the middle. The registry
# reads tokenizer files without loading them, so it asks only for a prefix marker.
FIM_PREFIX_MARKERS: tuple[str, ...] = tuple(
    dict.fromkeys(m for t in FIM_TEMPLATES for m in (t.prefix_token, _bare(t.prefix_token)))
)


def detect_fim_template(special_tokens: frozenset[str] | set[str]) -> FimTemplate | None:
    """The FIM template whose marker tokens the tokenizer has, or None."""
    for tpl in FIM_TEMPLATES:
        marks = {tpl.prefix_token, tpl.suffix_token, tpl.middle_token, *tpl.detect_also}
        if marks <= special_tokens or {_bare(m) for m in marks} <= special_tokens:
            return tpl
    return None
