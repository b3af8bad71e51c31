"""retina_fast.classify.cam: Grad-CAM maps (pytorch-grad-cam), overlays, PNG output."""
import os

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image
from torchvision.models import resnet18

from retina_fast.classify.cam import default_target_layer, grad_cam, overlay, save_overlays
from retina_fast.data.phantom import make_fundus


pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed=0, num_classes=2):
    torch.manual_seed(seed)
    return resnet18(num_classes=num_classes).eval()


def _closed_form_cam(model, x, c):
    """CAM of a ResNet (global average pool + linear head) = Grad-CAM: ReLU(sum_k W[c,k] A_k), scaled
    to [0, 1] at layer4's size, resized bilinearly (half-pixel centres) and scaled again."""
    feats = {}
    h = model.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("a", o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    a = feats["a"]                                                    # [N, 512, h, w]
    cam = torch.relu(torch.einsum("k,nkhw->nhw", model.fc.weight[c].detach(), a))
    cam = cam - cam.amin(dim=(1, 2), keepdim=True)
    cam = cam / (1e-7 + cam.amax(dim=(1, 2), keepdim=True))
    up = torch.nn.functional.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    up = up - up.amin(dim=(1, 2), keepdim=True)
    return (up / (1e-7 + up.amax(dim=(1, 2), keepdim=True))).numpy()


def _square_image(seed, size=128, corner=(0, 64), side=64):
    """[1, 3, H, W] in [-1, 1]: dim textured background with a bright textured square."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.8, -0.4, (3, size, size)).astype(np.float32)
    r, c = corner
    x[:, r:r + side, c:c + side] = rng.uniform(0.4, 1.0, (3, side, side))
    return torch.from_numpy(x)[None]


def test_matches_closed_form_cam_for_each_class():
    model = _net(1)
    x = torch.rand(2, 3, 96, 128) * 2 - 1             # non-square: (rows, cols) must not be swapped
    for c in (0, 1):
        heat = grad_cam(model, x, c)
        assert heat.shape == (2, 96, 128) and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
        np.testing.assert_allclose(heat, _closed_form_cam(model, x, c), atol=2e-3)


def test_planted_evidence_is_localised_and_differs_between_classes():
    # head built so that on this image class 1's evidence sum_k W[1,k] A_k is exactly +1 in the layer4
    # cells under the bright square and -1 elsewhere, and class 0's the opposite: the class-1 map must
    # be the (upsampled) indicator of the square, the class-0 map its complement
    model = _net(2)
    x = _square_image(3)
    feats = {}
    h = model.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("a", o.detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    a = feats["a"][0].double()                        # [512, 4, 4]; the square covers cells (0:2, 2:4)
    inside = torch.zeros(4, 4, dtype=torch.bool)
    inside[0:2, 2:4] = True
    target = torch.where(inside, 1.0, -1.0).double().reshape(16, 1)
    w = torch.linalg.lstsq(a.reshape(512, 16).T, target, driver="gelsd").solution[:, 0]   # min-norm exact fit
    assert torch.allclose(torch.einsum("k,khw->hw", w, a), target.reshape(4, 4), atol=1e-6)
    with torch.no_grad():
        model.fc.weight.copy_(torch.stack([-w, w]).float())
        model.fc.bias.zero_()
    square = np.zeros((128, 128), bool)
    square[0:64, 64:128] = True
    h1 = grad_cam(model, x, 1)[0]
    h0 = grad_cam(model, x, 0)[0]
    assert h1[square].mean() > 0.8 and h1[~square].mean() < 0.15
    assert h0[~square].mean() > 0.8 and h0[square].mean() < 0.15
    np.testing.assert_allclose(h0 + h1, 1.0, atol=2e-3)    # complementary indicators, linearly interpolated
    assert (h1[16:48, 80:112] > 0.99).all() and (h0[80:, :48] > 0.99).all()
    # per-image target classes in one batch equal the separate calls
    both = grad_cam(model, torch.cat([x, x]), [1, 0])
    np.testing.assert_allclose(both[0], h1, atol=1e-5)
    np.testing.assert_allclose(both[1], h0, atol=1e-5)


def test_trained_on_phantoms_map_of_input_size_differs_between_classes():
    # a resnet18 trained for a few steps on phantom normal vs phantom-ERM frames (96 x 128 px)
    imgs, labels = [], []
    for i in range(16):
        img, _ = make_fundus(500 + i, size=(96, 128), disease="erm" if i % 2 else None)
        imgs.append(img)
        labels.append(i % 2)
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.tensor(labels)
    model = _net(4)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(4):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    grads_before = [p.grad.clone() for p in model.parameters()]
    heat1 = grad_cam(model, x[:4], 1, batch_size=3)
    heat0 = grad_cam(model, x[:4], 0, batch_size=3)
    assert heat1.shape == (4, 96, 128) and heat1.dtype == np.float32
    assert 0.0 <= heat1.min() and heat1.max() <= 1.0 and np.isfinite(heat1).all()
    assert np.abs(heat1 - heat0).mean() > 0.05
    # batching does not change a map (eval mode: no batch statistics)
    np.testing.assert_allclose(heat1, grad_cam(model, x[:4], 1, batch_size=4), atol=1e-5)
    # the model comes back as it was: train mode, trainable, no weight gradients computed by Grad-CAM
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None or torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads_before))


def test_target_layer_choices_and_errors():
    model = _net(5)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert default_target_layer(model) is model.layer4[-1]
    by_name = grad_cam(model, x, 1, target_layer="layer4.1")
    by_module = grad_cam(model, x, 1, target_layer=model.layer4[-1])
    np.testing.assert_array_equal(by_name, grad_cam(model, x, 1))
    np.testing.assert_array_equal(by_name, by_module)
    earlier = grad_cam(model, x, 1, target_layer="layer3")
    assert earlier.shape == (1, 64, 64) and not np.allclose(earlier, by_name, atol=1e-2)
    no_layer4 = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                    torch.nn.Flatten(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no 'layer4'.*target_layer"):
        grad_cam(no_layer4, x, 1)
    assert grad_cam(no_layer4, x, 1, target_layer=no_layer4[1]).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="'layer9' is not a module name"):
        grad_cam(model, x, 1, target_layer="layer9")
    with pytest.raises(ValueError, match="not a module of the model"):
        grad_cam(model, x, 1, target_layer=torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="4-D"):
        grad_cam(model, x, 1, target_layer="fc")
    with pytest.raises(TypeError, match="target_layer"):
        grad_cam(model, x, 1, target_layer=3)
    with pytest.raises(ValueError, match="target_class 2 out of range"):
        grad_cam(model, x, 2)
    with pytest.raises(ValueError, match="target_class must be >= 0"):
        grad_cam(model, x, -1)
    with pytest.raises(ValueError, match="target_class has 2 entries for 1"):
        grad_cam(model, x, [0, 1])
    with pytest.raises(ValueError, match="image_tensor"):
        grad_cam(model, torch.rand(3, 64), 1)
    with pytest.raises(ValueError, match="NaN"):
        grad_cam(model, torch.full((1, 3, 64, 64), float("nan")), 1)


def test_overlay():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    heat = rng.random((40, 60)).astype(np.float32)
    out = overlay(img, heat, 0.4)
    assert out.shape == (40, 60, 3) and out.dtype == np.uint8
    jet = colormaps["jet"](heat, bytes=True)[..., :3].astype(float)
    np.testing.assert_array_less(np.abs(out - (0.6 * img + 0.4 * jet)), 0.51)
    np.testing.assert_array_equal(overlay(img, heat, 0.0), img)
    np.testing.assert_array_equal(overlay(img, heat, 1.0), jet.astype(np.uint8))
    # hot spots are red, cold ones blue
    assert tuple(overlay(img, np.ones((40, 60)), 1.0)[0, 0]) == (127, 0, 0)
    assert overlay(img, np.zeros((40, 60)), 1.0)[0, 0, 2] > 100
    # a map at another size is resized to the image; grey images become RGB
    small = overlay(img, np.ones((10, 15)), 1.0)
    assert small.shape == (40, 60, 3) and (small == small[0, 0]).all()
    assert overlay(img[..., 0], heat).shape == (40, 60, 3)
    with pytest.raises(ValueError, match="image_uint8"):
        overlay(img.astype(np.float32), heat)
    with pytest.raises(ValueError, match="heat"):
        overlay(img, heat[None])
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, heat, 1.5)


def test_save_overlays(tmp_path):
    model = _net(6)
    imgs = np.stack([make_fundus(600 + i, size=(64, 80), disease="erm" if i else None)[0] for i in range(3)])
    paths = save_overlays(model, imgs, ["normal_0", "erm_1.png", "erm_2"], tmp_path / "cam", [1, 1, 0],
                          batch_size=2)
    assert [os.path.basename(p) for p in paths] == ["normal_0.png", "erm_1.png", "erm_2.png"]
    assert sorted(os.listdir(tmp_path / "cam")) == ["erm_1.png", "erm_2.png", "normal_0.png"]   # no temp files
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    heat = grad_cam(model, x, [1, 1, 0])
    for i, p in enumerate(paths):
        got = np.asarray(Image.open(p))
        np.testing.assert_array_equal(got, overlay(imgs[i], heat[i], 0.5))
    with pytest.raises(ValueError, match="plain file names"):
        save_overlays(model, imgs[:1], ["../x"], tmp_path)
    with pytest.raises(ValueError, match="unique"):
        save_overlays(model, imgs[:2], ["a", "a.png"], tmp_path)
    with pytest.raises(ValueError, match="names has 1 entries for 2"):
        save_overlays(model, imgs[:2], ["a"], tmp_path)
    with pytest.raises(ValueError, match="one size"):
        save_overlays(model, [imgs[0], imgs[1, :32]], ["a", "b"], tmp_path)
