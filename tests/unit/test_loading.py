import pytest

from app.engine.loading import COMPLETE_MARKER, resolve_model
from app.errors import ModelUnavailableError


def test_local_directory_is_used_as_is(tmp_path):
    assert resolve_model(str(tmp_path), tmp_path / "cache", download=_never) == tmp_path.resolve()


def _never(model_id, target):
    raise AssertionError("must not download")


def test_id_downloaded_once_then_loaded_from_cache(tmp_path):
    calls = []

    def fake_download(model_id, target):
        calls.append(model_id)
        (target / "config.json").write_text("{}")

    cache = tmp_path / "cache"
    p1 = resolve_model("iic/some-model", cache, download=fake_download)
    p2 = resolve_model("iic/some-model", cache, download=_never)
    assert p1 == p2 == cache / "iic" / "some-model" and calls == ["iic/some-model"]
    assert (p1 / COMPLETE_MARKER).exists()


def test_unreachable_hub_message_names_id_cache_and_fix(tmp_path):
    def offline(model_id, target):
        raise ConnectionError("Name or service not known")

    with pytest.raises(ModelUnavailableError) as e:
        resolve_model("iic/nlp_gte_sentence-embedding_chinese-large", tmp_path / "cache", download=offline)
    msg = e.value.message
    assert "iic/nlp_gte_sentence-embedding_chinese-large" in msg
    assert str(tmp_path / "cache" / "iic" / "nlp_gte_sentence-embedding_chinese-large") in msg
    assert "copy that directory" in msg and "local directory" in msg and "ConnectionError" in msg
    # a failed download leaves no "complete" marker, so the next start tries again
    assert not (tmp_path / "cache" / "iic" / "nlp_gte_sentence-embedding_chinese-large" / COMPLETE_MARKER).exists()


@pytest.mark.parametrize("arg", ["./nope", "/no/such/dir", "not an id", "a/b/c"])
def test_neither_directory_nor_id(tmp_path, arg):
    with pytest.raises(ModelUnavailableError) as e:
        resolve_model(arg, tmp_path, download=_never)
    assert "no such directory" in e.value.message
