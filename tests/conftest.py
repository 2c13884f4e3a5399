import pytest
import torch

import panda
from panda.features import FeatureSource
from panda.model import PandA
from panda.removal import search_background


@pytest.fixture(scope="session")
def celeba():
    return panda.load_generator("dcgan-celeba")


@pytest.fixture(scope="session")
def digiface():
    return panda.load_generator("dcgan-digiface")


@pytest.fixture(scope="session")
def model(celeba):
    """A small fit: 256 samples at relu2 (256 x 8 x 8), all channels, 8 parts, scored on 64 held-out
    samples, with the background appearance searched on 4."""
    torch.manual_seed(0)
    m = PandA(rank_parts=8).fit(FeatureSource(celeba, "relu2", range(256)))
    m.score(FeatureSource.heldout(celeba, "relu2", 64))
    search_background(m, celeba, 4)
    return m


@pytest.fixture(scope="session")
def factor_file(model, tmp_path_factory):
    return model.save(tmp_path_factory.mktemp("factors") / "celeba.safetensors")


@pytest.fixture(scope="session")
def mixed_model(celeba):
    """The ``model`` fit with an appearance mixing W (relu2, 256 samples, 8 parts), scored on 64 held-out samples."""
    m = PandA(rank_parts=8, mixing=True).fit(FeatureSource(celeba, "relu2", range(256)))
    m.score(FeatureSource.heldout(celeba, "relu2", 64))
    return m
