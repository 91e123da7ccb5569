"""Settings refuse bad values at start, naming the setting, the limit and the value."""

import pytest

from app.settings import Settings


def test_torch_threads_and_dtype_default_to_all_cores_and_auto():
    s = Settings.load([], env={})
    assert (s.torch_threads, s.dtype) == (None, "auto")
    s = Settings.load([], env={"TORCH_THREADS": "1", "DTYPE": "bfloat16"})
    assert (s.torch_threads, s.dtype) == (1, "bfloat16")


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"TORCH_THREADS": "0"}, "TORCH_THREADS (--torch-threads) must be from 1 to 1024; got 0."),
        ({"DTYPE": "fp16"}, "DTYPE (--dtype) must be one of auto, float32, bfloat16; got 'fp16'."),
    ],
)
def test_bad_values_are_refused_by_name(env, needle):
    with pytest.raises(SystemExit) as err:
        Settings.load([], env=env)
    assert str(err.value) == needle


def test_on_a_space_share_links_use_its_host_unless_public_url_is_set():
    from app.links import PublicLinks

    space = Settings.load([], env={"SPACE_HOST": "me-playground.hf.space", "SPACE_ID": "me/pg"})
    assert PublicLinks.from_settings(space).base("localhost") == "https://me-playground.hf.space"
    assert space.space_id == "me/pg"
    own = Settings.load(["--public-url", "https://pg.example"], env={"SPACE_HOST": "x.hf.space"})
    assert PublicLinks.from_settings(own).base("localhost") == "https://pg.example"
    assert PublicLinks.from_settings(Settings.load([], env={})).base("evil.example") == ""


def test_data_dir_is_where_the_other_entry_points_look(tmp_path, monkeypatch):
    """`python -m model.smollm2`, training and bench/ find DATA_DIR without importing the app."""
    from model.paths import default_data_dir

    assert Settings.load([], env={}).data_dir == str(default_data_dir(env={}))
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert Settings.load([]).data_dir == str(default_data_dir()) == str(tmp_path)
