"""pipeline/model/checkpoint.py: reading the official files, and the surgery on their key names."""

import pytest
import torch

from pipeline.model.checkpoint import CheckpointError, read_state_dict, strip_wrapper_prefixes


def test_checkpoint_without_the_requested_state_dict_lists_what_it_holds(tmp_path):
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"critic": {"w": torch.zeros(1)}}, path)
    with pytest.raises(
        CheckpointError, match=r"has none of the state dicts \['generator_ema'\]; it holds \['critic'\]"
    ):
        read_state_dict(path, keys=("generator_ema",))


def test_wrapper_prefixes_are_stripped_wherever_training_code_put_them():
    names = {
        "model.blocks.0.norm3.weight": "blocks.0.norm3.weight",  # the Self Forcing wrapper attribute
        "model._orig_mod.head.head.bias": "head.head.bias",  # torch.compile
        "model.blocks.3._fsdp_wrapped_module.ffn.0.weight": "blocks.3.ffn.0.weight",  # FSDP, mid-name
        "patch_embedding.weight": "patch_embedding.weight",  # already clean
    }
    tensors = {name: torch.zeros(1) for name in names}
    assert list(strip_wrapper_prefixes(tensors)) == list(names.values())


def test_a_file_that_is_no_checkpoint_is_named_with_the_cause(tmp_path):
    path = tmp_path / "Wan2.1_VAE.pth"
    path.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match=rf"cannot read checkpoint {path}: "):
        read_state_dict(path)
