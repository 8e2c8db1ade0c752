"""model_info files: every shipped file is valid, each bad field is named, hub failures suggest an alternative."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from attnviz.pipeline.models.info import (
    ModelInfoError,
    get_model_info,
    known_models,
    load_model_info_file,
    parse_overrides,
)

VALID = {"name": "custom", "family": "encoder", "source": {"kind": "random", "architecture": "bert"},
         "tokenizer": "minilm-wordpiece", "tasks": ["classification"],
         "config": {"layers": 1, "heads": 2, "hidden": 32, "intermediate_size": 64}}


def test_every_shipped_file_is_valid() -> None:
    names = set(known_models())
    assert {"minilm", "gpt2", "bert-base-uncased", "albert-base-v2", "opus-mt-en-es", "gpt2-random", "albert-random",
            "bert-random", "seq2seq-random"} <= names
    for name in names:
        info = get_model_info(name)
        assert info.name == name
        assert info.random_weights == name.endswith("-random")
        assert ("(random weights)" in info.display_name) == info.random_weights


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("family", "transformer", "field 'family'"),
    ("tasks", [], "field 'tasks'"),
    ("tasks", ["summarization"], "field 'tasks.0'"),
    ("source", {"kind": "hub"}, "source.kind 'hub' needs source.id"),
    ("source", {"kind": "random"}, "needs source.architecture"),
    ("source", {"kind": "ftp", "id": "x"}, "field 'source.kind'"),
    ("max_length", 1, "field 'max_length'"),
    ("seed", "abc", "field 'seed'"),
    ("name", "bad name!", "field 'name'"),
    ("unknown_field", 1, "field 'unknown_field'"),
    ("trust_remote_code", "maybe", "field 'trust_remote_code'"),
])
def test_each_invalid_field_is_named(tmp_path: Path, field: str, value: object, needle: str) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump({**VALID, field: value}))
    with pytest.raises(ModelInfoError) as info:
        load_model_info_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and needle in message, message


def test_translation_needs_encoder_decoder(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump({**VALID, "tasks": ["translation"]}))
    with pytest.raises(ModelInfoError, match="needs family 'encoder-decoder'"):
        load_model_info_file(path)


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(ModelInfoError, match="cannot read it as YAML"):
        load_model_info_file(path)
    path.write_text("- a list\n")
    with pytest.raises(ModelInfoError, match="expected a mapping"):
        load_model_info_file(path)


def test_name_must_match_file(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(VALID))
    with pytest.raises(ModelInfoError, match="make them equal"):
        get_model_info("other", tmp_path)


def test_adding_a_file_adds_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attnviz.pipeline.precompute.local import precompute
    from attnviz.pipeline.precompute.options import PrecomputeOptions
    from attnviz.pipeline.store import StoreReader

    folder = tmp_path / "model_info"
    folder.mkdir()
    (folder / "custom.yaml").write_text(yaml.safe_dump(VALID))
    monkeypatch.setenv("ATTNVIZ_MODEL_INFO", str(folder))
    inp = tmp_path / "in.txt"
    inp.write_text("a new model, just by adding a file\n")
    precompute(PrecomputeOptions(model="custom", input=str(inp), store=tmp_path / "s.h5", capture="attention"))
    with StoreReader(tmp_path / "s.h5") as reader:
        info = reader.run_info(reader.runs()[0])
        assert info.shape == {"self": (1, 2)}
        assert info.meta["model"] == "custom" and info.meta["random_weights"] is True


def test_hub_failure_suggests_offline_alternative() -> None:
    from attnviz.pipeline.models.loading import ModelLoadError, load_model

    for name, alternative in (("gpt2", "gpt2-random"), ("opus-mt-en-es", "seq2seq-random"),
                              ("bert-base-uncased", "minilm")):
        with pytest.raises(ModelLoadError) as info:
            load_model(name)
        assert "\n" not in str(info.value) and alternative in str(info.value), str(info.value)


def test_overrides_parse_yaml_scalars_and_aliases() -> None:
    assert parse_overrides(["n_layer=4", "layers=2", "dropout=0.1", "flag=true", "act=gelu"]) == {
        "n_layer": 4, "num_hidden_layers": 2, "dropout": 0.1, "flag": True, "act": "gelu"}
    with pytest.raises(ModelInfoError, match="key=value"):
        parse_overrides(["nolayer"])
