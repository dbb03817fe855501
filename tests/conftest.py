import os
import sys

import pytest
import torch

# The repository root is the package; tests import it as `hystream` (installed editable by the test
# command). Fall back to a link when run from a plain checkout.
try:
    import hystream  # noqa: F401
except ImportError:  # pragma: no cover - developer convenience
    import tempfile

    link_dir = tempfile.mkdtemp(prefix="hystream-import-")
    os.symlink(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.path.join(link_dir, "hystream"))
    sys.path.insert(0, link_dir)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_dit_sd():
    from tiny_dit import tencent_state_dict

    return tencent_state_dict()


@pytest.fixture(scope="session")
def tiny_dit_reference(tiny_dit_sd):
    from tiny_dit import diffusers_model

    return diffusers_model(tiny_dit_sd)
