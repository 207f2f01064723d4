"""model.pretrained with TorchXRayVision weights: the mapped timm backbone computes TorchXRayVision's features."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
import torchxrayvision as xrv

from cxrlt.errors import ConfigError
from cxrlt.models.backbones import create_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


def xrv_input(size: int) -> torch.Tensor:
    """An image in TorchXRayVision's value range [-1024, 1024]."""
    return torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2048 - 1024


def test_a_torchxrayvision_densenet_file_gives_its_features(tmp_path):
    torch.manual_seed(0)
    reference = xrv.models.DenseNet(weights=None).eval()  # untrained: the test needs no download
    torch.save(reference.state_dict(), tmp_path / "xrv-densenet.pt")
    backbone = create_backbone("densenet121", tmp_path / "xrv-densenet.pt", in_chans=1).eval()
    x = xrv_input(224)
    with torch.no_grad():
        expected = reference.features2(x.clone())  # TorchXRayVision's feature vector: ReLU, average pool
        got = F.adaptive_avg_pool2d(backbone(x), 1).flatten(1)
    assert expected.shape == got.shape == (1, 1024)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_a_torchxrayvision_resnet50_module_state_gives_its_features(tmp_path):
    # TorchXRayVision's ResNet always downloads its weights, so build it as its __init__ does: torchvision's
    # resnet50 with a 1-channel first convolution, wrapped as `model`; its own `features` runs it.
    torch.manual_seed(0)
    reference = xrv.models.ResNet.__new__(xrv.models.ResNet)
    torch.nn.Module.__init__(reference)
    reference.model = torchvision.models.resnet50(weights=None)
    reference.model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    reference.eval()
    with torch.no_grad():
        for module in reference.modules():  # running statistics away from 0 / 1 so batch norms are checked too
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    torch.save(reference.state_dict(), tmp_path / "xrv-resnet50.pt")  # keys "model.conv1.weight", ...
    backbone = create_backbone("resnet50", tmp_path / "xrv-resnet50.pt", in_chans=1).eval()
    x = xrv_input(512)  # its input size: features() resizes anything else to 512
    with torch.no_grad():
        expected = reference.features(x.clone())
        got = F.adaptive_avg_pool2d(backbone(x), 1).flatten(1)
    assert expected.shape == got.shape == (1, 2048)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_weights_that_fit_no_backbone_are_refused_naming_the_keys(tmp_path):
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), tmp_path / "resnet10t.pt")
    with pytest.raises(ConfigError, match=r"fits no 'resnet18' backbone: \d+ of its keys are not in the file "
                                          r"\(e\.g\. .*conv1\.weight.*\) and \d+ keys of the file fit nothing "
                                          r"\(e\.g\. conv1\.0\.weight"):
        create_backbone("resnet18", tmp_path / "resnet10t.pt", in_chans=1)
    (tmp_path / "list.pt").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cannot read"):
        create_backbone("resnet18", tmp_path / "list.pt", in_chans=1)
