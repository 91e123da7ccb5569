"""The loop rule on the real tiny model: greedy on a counting prompt, tiny-starcoder writes
" 1," for ever; the run stops once that is a loop and says why, far short of its budget."""

from model.engine import CancelToken, GenerationParams
from tests.fakes import playground_over


def test_a_real_model_that_loops_is_stopped_and_told(engine):
    playground = playground_over(engine)
    params = GenerationParams(max_new_tokens=448, temperature=0, repetition_penalty=1.0)
    prompt = "x = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
    final = list(playground.complete(prompt, params, CancelToken()))[-1]
    assert final.done.reason == "loop", final.status
    assert "stopped: the model was repeating itself" in final.status
    assert final.done.generated_tokens < 300  # of 448: about 200 characters of " 1,"
    off = playground_over(engine, stop_loops=False)
    assert list(off.complete(prompt, params, CancelToken()))[-1].done.reason == "length"
