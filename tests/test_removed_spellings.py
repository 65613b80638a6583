"""Option spellings from before the engine/trainer/verifier references are not accepted: each
is an unknown option (or value), and the error names what to write instead."""

from __future__ import annotations

import re

import pytest

from dualcurate import Pipeline, load_recipe
from dualcurate.errors import RecipeError
from dualcurate.plugins import PluginHost

SOURCE = {"use": "hello", "n": 2}
DISTILL = {"use": "hf-distill", "engine": {"model": "m"}}
FILTER = {"use": "difficulty", "engine": {"use": "hf", "model": "m"}}
JUDGE = {"use": "dual-tuning", "base_model": "m"}
HF_SOURCE = {"use": "hf-dataset", "sources": [{"name": "s", "jsonl": __file__}]}


def problems(raw: dict) -> str:
    with pytest.raises(RecipeError) as err:
        Pipeline(load_recipe(raw), host=PluginHost()).validate()
    # each line without where the option was set: "... for plugin 'x' (set in [distill]); ..."
    return re.sub(r" \(set in [^)]*\)", "", "\n".join(err.value.problems))


@pytest.mark.parametrize(("raw", "line"), [
    pytest.param({"source": SOURCE, "distill": {"use": "hf-distill",
                                                "engine_options": {"model": "m"}}},
                 "[distill] engine_options: unknown option for plugin 'hf-distill'; "
                 "did you mean engine = { use = ", id="engine_options"),
    pytest.param({"source": SOURCE, "distill": {**DISTILL, "caption_engine_options": {}}},
                 "[distill] caption_engine_options: unknown option for plugin 'hf-distill'; "
                 "did you mean caption_engine = {", id="caption_engine_options"),
    pytest.param({"source": SOURCE, "distill": {**DISTILL, "batch_size": 4}},
                 "[distill] batch_size: unknown option for plugin 'hf-distill'; did you mean "
                 "engine = { ..., batch_size = N }", id="distiller-batch_size"),
    pytest.param({"source": SOURCE, "distill": {**DISTILL, "max_concurrency": 4}},
                 "[distill] max_concurrency: unknown option for plugin 'hf-distill'; did you "
                 "mean engine = { ..., max_concurrency = N }", id="distiller-max_concurrency"),
    pytest.param({"source": SOURCE, "filter": {**FILTER, "engine_options": {"model": "m"}}},
                 "[filter] engine_options: unknown option for plugin 'difficulty'; did you "
                 "mean engine = {", id="difficulty-engine_options"),
    pytest.param({"source": SOURCE, "filter": {**FILTER, "verifier_stage": ["rule-verify"],
                                               "verifier_options": {"rule-verify": {}}}},
                 "[filter] verifier_options: unknown option for plugin 'difficulty'; did you "
                 "mean verifier_stage = [{ use = ", id="verifier_options"),
    pytest.param({"source": SOURCE, "judge": {**JUDGE, "engine_options": {}}},
                 "[judge] engine_options: unknown option for plugin 'dual-tuning'; did you "
                 "mean engine = {", id="judge-engine_options"),
    pytest.param({"source": SOURCE, "judge": {**JUDGE, "trainer_options": {"max_steps": 2}}},
                 "[judge] trainer_options: unknown option for plugin 'dual-tuning'; did you "
                 "mean trainer = { use = ", id="trainer_options"),
    pytest.param({"source": {**HF_SOURCE, "llm_clean_engine": "openai",
                             "llm_clean_options": {"model": "m"}}},
                 "[source] llm_clean_options: unknown option for plugin 'hf-dataset'; did you "
                 "mean llm_clean_engine = { use = ", id="llm_clean_options"),
    pytest.param({"source": {**HF_SOURCE, "dedup": {"near": True, "num_perm": 64}}},
                 "[source] dedup.num_perm: unknown option for plugin 'hf-dataset'; it has had "
                 "no effect since SimHash replaced MinHash: delete it", id="num_perm"),
    pytest.param({"source": {**HF_SOURCE, "dedup": {"max_bucket": 1000}}},
                 "[source] dedup.max_bucket: unknown option for plugin 'hf-dataset'; it has "
                 "had no effect", id="max_bucket"),
    pytest.param({"source": SOURCE, "filter": {**FILTER, "k": 4}},
                 "[filter] k: unknown option for plugin 'difficulty'; did you mean "
                 "samples_per_question", id="difficulty-k"),
    pytest.param({"source": SOURCE, "filter": {**FILTER, "prompt_template": "{question}"}},
                 "[filter] prompt_template: unknown option for plugin 'difficulty'; did you "
                 "mean template (a Jinja file or text", id="difficulty-prompt_template"),
    pytest.param({"source": SOURCE, "distill": {**DISTILL, "chunk_size": 64}},
                 "[distill] chunk_size: unknown option for plugin 'hf-distill'; the streaming "
                 "executor's shard window", id="distiller-chunk_size"),
    pytest.param({"source": {**HF_SOURCE, "dedup": {"near": True, "method": "minhash"}}},
                 "[source] dedup.method: Input should be 'simhash' or 'embeddings' "
                 "(got 'minhash')", id="method-minhash"),
])
def test_an_old_spelling_is_refused_naming_the_new_one(raw: dict, line: str) -> None:
    assert line in problems(raw)


def test_a_misspelt_option_without_an_old_spelling_gets_the_generic_hint() -> None:
    out = problems({"source": SOURCE, "distill": {**DISTILL, "tempreature": 1.0}})
    assert "[distill] tempreature: unknown option for plugin 'hf-distill'; check the " \
           "spelling" in out


def test_the_old_parser_alias_is_gone() -> None:
    import dualcurate.distill

    assert not hasattr(dualcurate.distill, "split_response")
