import pytest

from tests.load._shards import make_shards


@pytest.fixture
def shards(tmp_path):
    samples, index, _ = make_shards(tmp_path / "shards")
    return tmp_path / "shards", samples, index
