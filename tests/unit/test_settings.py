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
