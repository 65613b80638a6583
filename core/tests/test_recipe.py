"""Recipes: parsing, --set overrides, validation reporting every problem with its path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dualcurate import Pipeline, RecipeError, load_recipe
from dualcurate.recipe import parse_value


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_all_problems_reported_at_once(core_host, tmp_path):
    path = write(tmp_path, '[source]\nuse = "counting"\nn = "many"\n'
                           '[distill]\nuse = "double"\nfactr = 3\n'
                           '[filter]\nuse = "nonexistent"\n')
    with pytest.raises(RecipeError) as err:
        Pipeline(load_recipe(path), host=core_host).validate()
    problems = err.value.problems
    assert len(problems) == 3
    assert any(p.startswith("[source] n:") for p in problems)
    assert any(p.startswith("[distill] factr:") and "unknown option" in p for p in problems)
    assert any(p.startswith("[filter] use:") and "even" in p for p in problems)


def test_malformed_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[source\nuse = 1")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(path)


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_structure_errors(tmp_path):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, '[distill]\nuse = "x"\n[weird]\nfoo = 1\n'
                                    '[filter]\nkind = "filter"\n'))
    text = str(err.value)
    assert "[weird]: unknown stage section" in text
    assert "[filter] use: missing" in text
    assert "first stage must be a source" in text


def test_set_overrides(tmp_path):
    path = write(tmp_path, '[source]\nuse = "counting"\nn = 3\n')
    recipe = load_recipe(path, ["source.n=7", "run.seed=5", "source.domains=['a']",
                                "source.plugins.other.x=true"])
    spec = recipe.stage("source")
    assert spec.options["n"] == 7 and spec.options["domains"] == ["a"]
    assert recipe.run.seed == 5
    assert spec.options_for("other") == {"n": 7, "domains": ["a"], "x": True}


def test_bad_set(tmp_path):
    path = write(tmp_path, '[source]\nuse = "counting"\n')
    with pytest.raises(RecipeError, match=r"section\.key=value"):
        load_recipe(path, ["nonsense"])


def test_plugin_override_replaces_use(core_host, tmp_path):
    path = write(tmp_path, '[source]\nuse = "counting"\n[filter]\nuse = "other"\n')
    from .conftest import EvenFilter  # noqa: F401  (registered by core_host)

    core_host.load("hello")
    pipeline = Pipeline(load_recipe(path), host=core_host, selected=["hello"])
    names = {r.name: r.plugin for r in pipeline.validate()}
    assert names == {"source": "hello", "filter": "hello-length"}


@given(st.one_of(st.integers(), st.booleans(), st.text(alphabet="abcxyz", min_size=1)))
def test_parse_value_roundtrip(value):
    text = str(value).lower() if isinstance(value, bool) else str(value)
    assert parse_value(text) == value


def test_plugin_override_with_two_stages_of_a_kind(core_host, tmp_path):
    core_host.load("hello")
    two = '[source]\nuse = "counting"\n[a]\nkind = "filter"\nuse = "even"\n' \
          '[b]\nkind = "filter"\nuse = "even"\n'
    with pytest.raises(Exception, match="has 2 filter stages"):
        Pipeline(load_recipe(write(tmp_path, two)), host=core_host, selected=["hello"])
    # a stage already using the plugin's name is the one it means: nothing else changes
    mixed = '[source]\nuse = "counting"\n[a]\nkind = "filter"\nuse = "hello-length"\n' \
            '[b]\nkind = "filter"\nuse = "even"\n'
    pipeline = Pipeline(load_recipe(write(tmp_path, mixed)), host=core_host,
                        selected=["hello"])
    names = {r.name: r.plugin for r in pipeline.validate()}
    assert names == {"source": "hello", "a": "hello-length", "b": "even"}
