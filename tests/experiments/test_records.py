"""utils.experiments.records: atomic writes, checked parts and run identities."""
import json

import pytest

from utils.experiments.records import (DamagedPartWarning, RunMismatchError, atomic_write, check_identity,
                                       load_csv_part, read_csv, save_csv_part, write_csv)


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "table.csv"
    write_csv(path, [{"a": 1, "b": 0.5}])

    def dies(f):
        f.write("a,b\n2,")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert read_csv(path) == [{"a": "1", "b": "0.5"}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_a_part_must_hold_the_rows_expected(tmp_path):
    part = tmp_path / "parts" / "batch_0000.csv"
    rows = [{"image": i, "value": i / 3} for i in range(5)]
    save_csv_part(part, rows)
    assert load_csv_part(part, 5) == [{"image": str(i), "value": str(i / 3)} for i in range(5)]
    with pytest.warns(DamagedPartWarning, match="holds 5 rows, 6 expected"):
        assert load_csv_part(part, 6) is None
    part.write_bytes(part.read_bytes().replace(b"0.33", b"0.34", 1))  # altered, same length
    with pytest.warns(DamagedPartWarning, match="checksum"):
        assert load_csv_part(tmp_path / "parts" / "batch_0000.csv") is None
    assert load_csv_part(tmp_path / "parts" / "batch_0001.csv") is None  # not there yet: no warning


def test_identity_mismatch_lists_every_difference(tmp_path):
    check_identity(tmp_path, {"data_root": "/a", "images": 4, "seed": 0})
    check_identity(tmp_path, {"data_root": "/a", "images": 4, "seed": 0})
    with pytest.raises(RunMismatchError) as error:
        check_identity(tmp_path, {"data_root": "/b", "images": 4, "seed": 1, "size": 64})
    message = str(error.value)
    assert 'data_root: stored "/a", now "/b"' in message and "seed: stored 0, now 1" in message
    assert "size: stored (absent), now 64" in message and "images" not in message.split("differing")[1]
    assert json.loads((tmp_path / "config.json").read_text())["data_root"] == "/a"
