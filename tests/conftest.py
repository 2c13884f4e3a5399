import pytest
import torch

import panda
from panda.model import PandA


@pytest.fixture(scope="session")
def celeba():
    return panda.load_generator("dcgan-celeba")


@pytest.fixture(scope="session")
def digiface():
    return panda.load_generator("dcgan-digiface")


@pytest.fixture(scope="session")
def model(celeba):
    """A small fit: 256 samples at relu2 (256 x 8 x 8), all channels, 8 parts."""
    torch.manual_seed(0)
    return PandA(rank_parts=8, n_heldout=64, background_samples=4).fit(celeba, "relu2", n_samples=256, seed=0)


@pytest.fixture(scope="session")
def factor_file(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("factors") / "celeba.safetensors")
