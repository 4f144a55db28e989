"""Loading without a second copy: parameters built on the meta device, checkpoint tensors assigned."""

from __future__ import annotations

import pytest
import torch

from app.errors import ModelUnavailableError
from app.models.checkpoint import load_into, load_state_dict, parameters_on_meta


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.big = torch.nn.Linear(20_000, 20_000)  # 1.6 GB if it were built for real
        self.small = torch.nn.Linear(4, 2)
        self.register_buffer("position_ids", torch.arange(6), persistent=False)


def test_parameters_are_meta_and_buffers_real_inside_only():
    with parameters_on_meta():
        m = Tiny()
    assert all(p.device.type == "meta" for p in m.parameters())
    assert m.position_ids.tolist() == list(range(6))  # buffers the checkpoint does not hold are real
    outside = torch.nn.Linear(3, 3)
    assert outside.weight.device.type == "cpu"  # the patch is gone after the block


def test_load_into_assigns_the_checkpoint_tensors(tmp_path):
    with parameters_on_meta():
        m = torch.nn.Linear(4, 2)
    state = {"weight": torch.arange(8.0).reshape(2, 4), "bias": torch.tensor([1.0, -1.0])}
    torch.save(state, tmp_path / "pytorch_model.bin")
    loaded = load_state_dict(tmp_path)
    load_into(m, loaded, "tiny")
    assert m.weight.data_ptr() == loaded["weight"].data_ptr()  # the mapped tensor itself, no copy
    assert m(torch.ones(1, 4)).tolist() == [[7.0, 21.0]]


def test_a_weight_the_checkpoint_lacks_is_an_error_not_random_values(tmp_path):
    with parameters_on_meta():
        m = torch.nn.Linear(4, 2)
    with pytest.raises(ModelUnavailableError, match="lacks 1 weights"):
        load_into(m, {"weight": torch.zeros(2, 4)}, "tiny")


def test_legacy_non_zip_checkpoints_still_load(tmp_path):
    state = {"weight": torch.ones(2, 2)}
    torch.save(state, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert load_state_dict(tmp_path)["weight"].tolist() == [[1.0, 1.0], [1.0, 1.0]]
