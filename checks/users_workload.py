"""What the simulated users of checks/users.py ask (modes, prompts, lengths, greedy parameters)
and what makes a result complete."""

from __future__ import annotations

FILL = "<FILL_HERE>"
COMPLETION_PROMPTS = [
    "def fibonacci(n):\n",
    "def is_prime(n: int) -> bool:\n",
    "import json\n\ndef read_json(path):\n",
    "class Stack:\n    def __init__(self):\n",
]
FIM_PROMPTS = [
    f"def add(a, b):\n    {FILL}\n\nprint(add(1, 2))\n",
    f"import os\n\ndef list_files(path):\n    {FILL}\n    return files\n",
    f"def read_lines(path):\n    with open(path) as f:\n        {FILL}\n",
    f"class Point:\n    def __init__(self, x, y):\n        {FILL}\n\n    def norm(self):\n",
]
ASSIST_MESSAGES = [
    "How do I read a JSON file in Python?",
    "What is a list comprehension?",
    "How do I reverse a string in Python?",
    "Write a function that checks if a number is even.",
]
MAX_NEW_TOKENS = [16, 32, 48]
SEARCH_QUERIES = ["json decoder", "socket timeout", "read file", "thread lock", "parse arguments"]
API = {"completion": "complete", "fim": "fill", "assistant": "assist"}
PROMPTS = {"completion": COMPLETION_PROMPTS, "fim": FIM_PROMPTS, "assistant": ASSIST_MESSAGES}
GREEDY = {"temperature": 0, "top_p": 0.9, "repetition_penalty": 1.0}


def request_args(mode: str, prompt: str, max_new: int) -> dict:
    first = "message" if mode == "assistant" else "prompt"
    args = {first: prompt, "max_new_tokens": max_new, **GREEDY}
    if mode == "assistant":
        args["history"] = []
    return args


def completeness(mode: str, prompt: str, text) -> str | None:
    """Why `text` is not a complete result for `prompt`, or None."""
    if not isinstance(text, str):
        return f"result is {type(text).__name__}, not text"
    if mode == "completion" and not text.startswith(prompt):
        return "does not start with the prompt"
    if mode == "fim":
        prefix, suffix = prompt.split(FILL)
        if not text.startswith(prefix):
            return "does not start with the prefix"
        if not text.endswith(suffix):
            return "does not end with the suffix"
    if mode == "assistant" and not text.strip():
        return "empty reply"
    return None


def combos() -> list[tuple[str, str, int]]:
    return [(m, p, n) for m in API for p in PROMPTS[m] for n in MAX_NEW_TOKENS]
