import json

import torch

import acl
from pipeline.archs import build
from pipeline.archs.calibrate import trained_looking_bn
from pipeline.interpretability import initial_kernels, markdown, measure, mosaic_lines


def _moved(model):
    with torch.no_grad():
        for _, layer in acl.acl_layers(model):
            for p in layer.parameters():
                p.add_(0.1)
    return model


def test_section_on_a_mobilenet_has_every_acl_and_both_mosaics(tmp_path):
    torch.manual_seed(0)
    net = build("mobilenet_v2", "G0.25Lg0.25P0.5", layers="first", in_channels=3)
    net = trained_looking_bn(net, (3, 32, 32))
    first = initial_kernels(net)
    _moved(net)  # "training"
    names = [n for n, _ in acl.acl_layers(net)]
    section = measure(net, torch.randn(20, 3, 32, 32), first, tmp_path, mosaic_layers=names[:1])
    json.dumps(section, allow_nan=False)  # strict JSON as report.json needs
    assert list(section["layers"]) == names and section["energy_images"] == 20
    entry = section["layers"][names[0]]
    assert {"Gabor", "LoG", "Plain"} == set(entry["share"])
    assert (tmp_path / entry["initial_mosaic"]).stat().st_size > 2000, "a real PNG"
    sigma = next(r for r in entry["akps"] if r["family"] == "LoG")
    layer = dict(acl.acl_layers(net))[names[0]]
    assert sigma["max"] == float(layer.akp1_Lg.detach().abs().max()), "the trained AKPs, not the initial ones"
    text = "\n".join(markdown(section))
    assert "## Inside the ACLs" in text and "| Gabor | LoG | Plain | cross |" in text
    pairs = "\n".join(mosaic_lines(section, {names[0]: "mosaic-x.png"}))
    assert f"![]({entry['initial_mosaic']}) | ![](mosaic-x.png)" in pairs


def test_without_initial_kernels_the_reason_is_given(tmp_path):
    net = build("lenet", "Lg0.5P0.5")
    section = measure(net.eval(), torch.randn(4, 1, 32, 32), None, tmp_path, mosaic_layers=["conv1"])
    assert section["initial_mosaics"].startswith("not available: ")
    assert not list(tmp_path.iterdir())
    text = "\n".join(mosaic_lines(section, {"conv1": "mosaic-conv1.png"}))
    assert "![conv1](mosaic-conv1.png)" in text and "Initial mosaics: not available" in text
