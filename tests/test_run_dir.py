"""The run-directory contract: checkpoint naming and discovery, and a tolerant reader of a
run's saved config (an older or newer run stays evaluable)."""

from __future__ import annotations

import pytest

from train.run_dir import (
    ADAPTER_FILES,
    CONFIG_FILE,
    STATE_FILE,
    RunRecordError,
    epoch_dir,
    epoch_of,
    find_adapters,
    list_checkpoints,
    read_run_record,
)


def _checkpoint(path, files=(STATE_FILE, CONFIG_FILE, *ADAPTER_FILES)):
    path.mkdir(parents=True)
    for name in files:
        (path / name).write_text("{}")
    return path


def test_checkpoints_are_listed_by_epoch_and_partial_ones_ignored(tmp_path):
    for epoch in (10, 2):
        _checkpoint(epoch_dir(tmp_path, epoch))
    _checkpoint(tmp_path / "checkpoints" / "epoch_0003.tmp-99")
    _checkpoint(tmp_path / "checkpoints" / "epoch_0004", files=ADAPTER_FILES)  # no trainer state
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch_0002", "epoch_0010"]
    assert [(a.tag, a.epoch) for a in find_adapters(tmp_path)] == [
        ("epoch_0002", 2), ("epoch_0004", 4), ("epoch_0010", 10)
    ]  # fmt: skip
    assert epoch_of(tmp_path / "lr1e-4_epoch_7") == 7 and epoch_of(tmp_path / "final") is None


def test_adapter_folders_and_a_single_adapter(tmp_path):
    for name in ("b", "a"):
        _checkpoint(tmp_path / "adapters" / name, files=ADAPTER_FILES)
    assert [a.tag for a in find_adapters(tmp_path / "adapters")] == ["a", "b"]
    assert [a.tag for a in find_adapters(tmp_path / "adapters" / "a")] == ["a"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_adapters(tmp_path / "missing")


def test_run_record_ignores_unknown_keys_and_defaults_missing_ones(tmp_path):
    config = tmp_path / CONFIG_FILE
    config.write_text(
        "model: {size: tiny, weights: /w, renamed_later: 1}\nrun: {seed: 7}\nlora: {rank: 4}\nlater: {}\n"
    )
    record = read_run_record(config)
    assert (record.model.size, record.model.weights, record.seed, record.lora) == (
        "tiny",
        "/w",
        7,
        {"rank": 4},
    )
    config.write_text("name: old\n")
    record = read_run_record(config)
    assert (record.model.size, record.model.weights, record.seed) == ("1b", None, 0)
    for text in ("run: {seed: seven}\n", "model: [1, 2]\n", "model: {size: [unclosed\n"):
        config.write_text(text)
        with pytest.raises(RunRecordError, match=str(config)):
            read_run_record(config)


def test_run_record_reads_the_data_section_tolerantly(tmp_path):
    config = tmp_path / CONFIG_FILE
    config.write_text(
        "data: {split: train, sequences: [2013_05_28_drive_0000_sync, 3], exclude_sequences: '0007, 0009',"
        " val_buffer_m: 50, seq_len: 8}\n"
    )
    data = read_run_record(config).data
    assert data.recorded and data.split == "train" and data.val_buffer_m == 50.0
    assert data.sequences == ("2013_05_28_drive_0000_sync", "3")
    assert data.exclude_sequences == ("0007", "0009")
    config.write_text("data: {split: train}\n")  # a run from before the buffer existed
    data = read_run_record(config).data
    assert data.recorded and data.val_buffer_m is None and data.sequences is None
    config.write_text("model: {size: tiny}\n")
    assert not read_run_record(config).data.recorded
    for text in ("data: {val_buffer_m: far}\n", "data: {sequences: {a: 1}}\n", "data: [1]\n"):
        config.write_text(text)
        with pytest.raises(RunRecordError, match=str(config)):
            read_run_record(config)
