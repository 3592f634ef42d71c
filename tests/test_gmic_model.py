"""GMIC (method §9): the network against the official layout, pooling, retrieval, loading,
the command line and the input preprocessing.

Every check compares with an independent computation written here: the official state
dict list (tests/data, copied from the description of the official implementation), a
functional ResNet-22, torchvision's ResNet-18, sorting, brute-force loops over windows,
and numpy slicing with the official border rule.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_correlax.cli import main
from napari_correlax.errors import CorrelaxError
from napari_correlax.gmic import (
    FEATURE_LAYER,
    GMIC,
    GMICConfig,
    cells_to_pixels,
    crop_patches,
    gmic_input,
    load_gmic,
    retrieve_windows,
    save_gmic,
    top_t_pool,
)
from napari_correlax.gmic.retrieval import top_t_count, window_cells
from napari_correlax.io import Mammogram

OFFICIAL_KEYS = Path(__file__).parent / "data" / "gmic_official_state_dict.txt"
SMALL = (512, 320)  # → an 8×5 saliency grid, 64 px per cell


def _randomise(model: GMIC, seed: int) -> GMIC:
    """Batch-norm statistics and affine parameters away from (0, 1), so that a wrongly
    wired normalisation shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
    return model.eval()


def _model(seed: int = 0, **config) -> GMIC:
    torch.manual_seed(seed)
    return _randomise(GMIC(GMICConfig(**config)), seed)


def _input(n: int = 2, seed: int = 1, shape: tuple[int, int] = SMALL) -> torch.Tensor:
    return torch.randn(n, 1, *shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------- independent references


def _reference_global(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """ResNet-22 of the official description, with functional calls."""

    def bn(h: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(h, state[f"{p}.running_mean"], state[f"{p}.running_var"],
                            state[f"{p}.weight"], state[f"{p}.bias"], False, 0.0, 1e-5)

    h = F.conv2d(x, state["ds_net.first_conv.weight"], stride=2, padding=3)
    h = F.max_pool2d(h, kernel_size=3, stride=2, padding=0)
    for stage in range(5):
        for block in range(2):
            p = f"ds_net.layer_list.{stage}.{block}"
            stride = 2 if stage > 0 and block == 0 else 1
            a = F.relu(bn(h, f"{p}.bn1"))
            shortcut = (F.conv2d(a, state[f"{p}.downsample.0.weight"], stride=stride)
                        if block == 0 else h)
            out = F.conv2d(a, state[f"{p}.conv1.weight"], stride=stride, padding=1)
            out = F.conv2d(F.relu(bn(out, f"{p}.bn2")), state[f"{p}.conv2.weight"], padding=1)
            h = out + shortcut
    return F.relu(bn(h, "ds_net.final_bn"))


def _brute_force_windows(maps: np.ndarray, window: tuple[int, int], k: int) -> list:
    """Greedy windows by explicit loops: per-class min–max, class sum, first strict
    maximum of the window mean in row-major order, picked window set to 0."""
    score = np.zeros(maps.shape[1:], dtype=np.float64)
    for m in maps.astype(np.float64):
        span = m.max() - m.min()
        score += (m - m.min()) / span if span > 0 else 0.0
    wh, ww = window
    picks = []
    for _ in range(k):
        best, best_value = None, -np.inf
        for r in range(score.shape[0] - wh + 1):
            for c in range(score.shape[1] - ww + 1):
                value = score[r:r + wh, c:c + ww].mean()
                if value > best_value:
                    best, best_value = (r, c), value
        picks.append(best)
        score[best[0]:best[0] + wh, best[1]:best[1] + ww] = 0.0
    return picks


def _official_crop(image: np.ndarray, corner: tuple[int, int], shape: tuple[int, int]
                   ) -> np.ndarray:
    """The official "upper_left" crop: valid part bottom-right, the rest the image min."""
    rows, cols = image.shape
    r0, r1 = np.clip([corner[0], corner[0] + shape[0]], 0, rows)
    c0, c1 = np.clip([corner[1], corner[1] + shape[1]], 0, cols)
    out = np.full(shape, image.min(), dtype=image.dtype)
    out[shape[0] - (r1 - r0):, shape[1] - (c1 - c0):] = image[r0:r1, c0:c1]
    return out


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


# ------------------------------------------------------------------------ the network


def test_state_dict_has_the_official_258_names_and_shapes_in_order():
    expected = [ln.strip() for ln in OFFICIAL_KEYS.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    model = GMIC()
    got = [f"{k} ({', '.join(str(s) for s in v.shape)})" for k, v in model.state_dict().items()]
    assert len(expected) == 258
    assert got == expected
    assert sum(p.numel() for p in model.parameters()) == 14_110_322


def test_global_network_matches_a_functional_resnet22_and_exposes_its_last_layer():
    model = _model(3)
    x = _input(1, seed=4, shape=(256, 192))
    captured = []
    layer = dict(model.named_modules())[FEATURE_LAYER]
    assert layer is model.feature_layer
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        h = model.ds_net(x)
    handle.remove()
    ref = _reference_global(model.state_dict(), x)
    assert h.shape == (1, 256, 4, 3)
    torch.testing.assert_close(h, ref, rtol=1e-4, atol=1e-5)
    assert captured and captured[0] is h


@pytest.mark.parametrize("crop", [(128, 128), (160, 160)])
def test_run_matches_a_per_image_reference(crop):
    """Whole forward pass against a step-by-step reference; crop 160 px reaches past the
    bottom edge (window of 2 cells, last corner at 384 + 160 > 512) so border crops count."""
    from torchvision.models import resnet18

    model = _model(5, crop_shape=crop, percent_t=0.1)
    state = model.state_dict()
    x = _input(2, seed=6)
    result = model.run(x)

    local = resnet18()
    own = {k[len("dn_resnet."):]: v for k, v in state.items() if k.startswith("dn_resnet.")}
    local.load_state_dict({**own, "fc.weight": local.fc.weight, "fc.bias": local.fc.bias})
    trunk = nn.Sequential(*list(local.children())[:-2]).eval()
    weights = {k: v.double().numpy() for k, v in state.items() if v.is_floating_point()}

    with torch.no_grad():
        h_g = _reference_global(state, x)
    k_top = round(8 * 5 * 0.1)
    window = (int(np.round(crop[0] * 8 / 512)), int(np.round(crop[1] * 5 / 320)))
    assert window == (2, 2)
    for n in range(2):
        features = h_g[n].double().numpy()  # 256×8×5
        logits = np.einsum("chw,kc->khw", features,
                           weights["left_postprocess_net.gn_conv_last.weight"][:, :, 0, 0])
        saliency = _sigmoid(logits)
        np.testing.assert_allclose(result.saliency[n], saliency, atol=1e-5)
        top = np.sort(saliency.reshape(2, -1), axis=1)[:, ::-1][:, :k_top].mean(axis=1)
        np.testing.assert_allclose(result.y_global[n], top, atol=1e-5)

        cells = _brute_force_windows(result.saliency[n], window, 6)
        np.testing.assert_array_equal(result.patch_cells[n], cells)
        corners = [(int(np.around(r / 8 * 512)), int(np.around(c / 5 * 320))) for r, c in cells]
        np.testing.assert_array_equal(result.patch_locations[n], corners)

        image = x[n, 0].numpy()
        patches = np.stack([_official_crop(image, c, crop) for c in corners])
        with torch.no_grad():
            batch = torch.from_numpy(patches)[:, None].repeat(1, 3, 1, 1)
            h_k = trunk(batch).mean(dim=(2, 3)).double().numpy()  # 6×512
        gate = np.tanh(h_k @ weights["mil_attn_V.weight"].T) * _sigmoid(
            h_k @ weights["mil_attn_U.weight"].T)
        score = (gate @ weights["mil_attn_w.weight"].T)[:, 0]
        attention = np.exp(score - score.max()) / np.exp(score - score.max()).sum()
        z = attention @ h_k
        y_local = _sigmoid(weights["classifier_linear.weight"] @ z)
        pooled = features.reshape(256, -1).max(axis=1)
        y_fusion = _sigmoid(weights["fusion_dnn.weight"] @ np.concatenate([pooled, z])
                            + weights["fusion_dnn.bias"])
        np.testing.assert_allclose(result.attention[n], attention, atol=1e-5)
        np.testing.assert_allclose(result.y_local[n], y_local, atol=1e-5)
        np.testing.assert_allclose(result.y_fusion[n], y_fusion, atol=1e-5)
    if crop == (160, 160):
        assert (result.patch_locations[..., 0] + 160 > 512).any()


def test_attention_sums_to_one_over_the_patches():
    result = _model(7, crop_shape=(64, 64), K=5).run(_input(3, seed=8))
    assert result.attention.shape == (3, 5)
    assert (result.attention > 0).all()
    np.testing.assert_allclose(result.attention.sum(axis=1), 1.0, atol=1e-6)
    assert result.y_fusion.shape == result.y_local.shape == result.y_global.shape == (3, 2)


def test_input_that_is_not_n_by_1_is_refused():
    with pytest.raises(CorrelaxError, match="N×1×H×W"):
        _model(0)(torch.zeros(1, 3, 256, 192))


# ------------------------------------------------------------ pooling and retrieval


@pytest.mark.parametrize("h, w, t", [(46, 30, 0.02), (5, 5, 0.1), (7, 3, 0.5), (4, 4, 1.0)])
def test_top_t_pooling_averages_the_round_h_w_t_largest_values(h, w, t):
    maps = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    count = round(h * w * t)  # 5·5·0.1 = 2.5 → 2 (halves to even)
    assert top_t_count(h, w, t) == count
    ref = np.sort(maps.numpy().reshape(2, 3, -1), axis=2)[..., ::-1][..., :count].mean(axis=2)
    np.testing.assert_allclose(top_t_pool(maps, t).numpy(), ref, rtol=1e-6)


def test_top_t_counts_of_the_published_models():
    assert [top_t_count(46, 30, t) for t in (0.02, 0.03, 0.05, 0.1)] == [28, 41, 69, 138]
    assert window_cells((256, 256), (2944, 1920), (46, 30)) == (4, 4)


def test_retrieval_picks_the_best_windows_in_order_and_zeroes_each_pick():
    gen = np.random.default_rng(11)
    # integer class maps from 0 to 8: min–max gives eighths, so every mean is exact
    maps = gen.integers(0, 9, size=(2, 2, 9, 7)).astype(np.float32)
    maps[:, :, 0, 0], maps[:, :, -1, -1] = 0, 8
    got = retrieve_windows(torch.from_numpy(maps), (3, 2), 5).numpy()
    assert got.shape == (2, 5, 2) and got.dtype == np.int64
    for n in range(2):
        assert [tuple(p) for p in got[n]] == _brute_force_windows(maps[n], (3, 2), 5)


def test_retrieval_takes_the_first_maximum_on_ties():
    score = np.zeros((1, 1, 6, 8), dtype=np.float32)
    score[0, 0, 3:5, 5:7] = 1.0  # later in row-major order
    score[0, 0, 1:3, 1:3] = 1.0  # earlier
    got = retrieve_windows(torch.from_numpy(score), (2, 2), 3).numpy()[0]
    # the two informative picks follow the official rule; the map is then all zero, where
    # the official code would return (0, 0) (overlapping the first pick): the first
    # window with no picked cell is taken instead
    assert [tuple(p) for p in got[:2]] == _brute_force_windows(score[0], (2, 2), 2)
    assert [tuple(p) for p in got] == [(1, 1), (3, 5), (0, 3)]


def test_retrieval_ignores_a_constant_class_map():
    maps = np.zeros((1, 2, 5, 5), dtype=np.float32)
    maps[0, 0] = 0.7  # constant: counts 0 (the official code would divide by zero)
    maps[0, 1, 3, 2] = 0.9
    got = retrieve_windows(torch.from_numpy(maps), (2, 2), 2).numpy()[0]
    assert [tuple(p) for p in got] == _brute_force_windows(maps[0], (2, 2), 2)
    assert tuple(got[0]) == (2, 1)


def _brute_force_distinct_windows(maps: np.ndarray, fallback: np.ndarray,
                                  window: tuple[int, int], k: int) -> list:
    """Greedy windows ranked by (map mean > 0 ? map mean : none), then the fallback's
    mean, then the share of unpicked cells, by explicit loops over every window."""
    def unit_sum(m3: np.ndarray) -> np.ndarray:
        out = np.zeros(m3.shape[1:])
        for m in m3.astype(np.float64):
            span = m.max() - m.min()
            out += (m - m.min()) / span if span > 0 else 0.0
        return out

    tiers = [unit_sum(maps), unit_sum(fallback), np.ones(maps.shape[1:])]
    wh, ww = window
    picks = []
    for _ in range(k):
        for tier in tiers:
            means = {(r, c): tier[r:r + wh, c:c + ww].mean()
                     for r in range(tier.shape[0] - wh + 1)
                     for c in range(tier.shape[1] - ww + 1)}
            top = max(means.values())
            if top > 0:
                best = min(rc for rc, v in means.items() if v == top)  # first in row order
                break
        picks.append(best)
        for tier in tiers:
            tier[best[0]:best[0] + wh, best[1]:best[1] + ww] = 0.0
    return picks


def test_retrieval_falls_back_when_the_map_runs_out_and_keeps_windows_distinct():
    score = np.zeros((1, 2, 6, 8), dtype=np.float32)
    score[0, 0, 4, 6] = 0.3  # one informative cell: its windows come first
    fallback = np.zeros((1, 2, 6, 8), dtype=np.float32)
    fallback[0, 1, 0:2, 3:5] = 1.0
    got = retrieve_windows(torch.from_numpy(score), (2, 2), 5,
                           fallback=torch.from_numpy(fallback)).numpy()[0]
    picks = [tuple(p) for p in got]
    assert picks == _brute_force_distinct_windows(score[0], fallback[0], (2, 2), 5)
    assert picks[0] == (3, 5) and picks[1] == (0, 3)  # map first, then the fallback
    assert len(set(picks)) == 5
    # nothing at all to go on: still distinct, no window repeated
    flat = torch.zeros((1, 1, 4, 4))
    got = retrieve_windows(flat, (2, 2), 4, fallback=flat).numpy()[0]
    assert [tuple(p) for p in got] == [(0, 0), (0, 2), (2, 0), (2, 2)]


@pytest.mark.parametrize("cam", ["cam", "gradcam", "gradcam++", "xgradcam", "layercam"])
def test_negative_saliency_logits_still_give_k_distinct_patches(cam):
    """A one-output GMIC whose saliency logits are negative everywhere (what a trained
    model gives on most normal images): the gradient CAMs are zero and, without a
    fallback, would pick the top-left window K times."""
    model = _model(3, num_classes=1, class_names=("Mass",), input_size=SMALL, K=6,
                   crop_shape=(64, 64))
    with torch.no_grad():
        weight = model.left_postprocess_net.gn_conv_last.weight
        weight.copy_(-weight.abs() - 0.01)  # features are ≥ 0 after ReLU: logits < 0
    x = torch.randn(2, 1, *SMALL)
    out = model(x, cam)
    assert bool((model.left_postprocess_net.gn_conv_last(out.features) < 0).all())
    from napari_correlax.gmic.retrieval import empty_class_maps

    if cam != "cam":
        assert bool(empty_class_maps(out.retrieval_map).all())
    for n in range(2):
        cells = [tuple(c) for c in out.patch_cells[n].tolist()]
        assert len(set(cells)) == 6, cells
        expected = _brute_force_distinct_windows(
            out.retrieval_map[n].numpy(), out.saliency[n].detach().numpy(), (1, 1), 6)
        assert cells == expected


def test_grid_cells_map_to_input_pixels():
    cells = torch.tensor([[[r, c] for r in range(43) for c in range(27)]])
    pixels = cells_to_pixels(cells, (46, 30), (2944, 1920)).numpy()
    np.testing.assert_array_equal(pixels, cells.numpy() * 64)
    # uneven sizes: cell/h·H rounded with halves to even (62.5 → 62, 187.5 → 188)
    odd = torch.tensor([[[3, 7], [2, 1], [6, 3]]])
    assert cells_to_pixels(odd, (16, 10), (500, 300)).tolist() == [[[94, 210], [62, 30],
                                                                     [188, 90]]]
    result = _model(0, crop_shape=(128, 128)).run(_input(1))
    np.testing.assert_array_equal(result.patch_locations, result.patch_cells * 64)


def test_border_crops_put_the_image_bottom_right_and_fill_with_its_minimum():
    images = torch.randn(2, 10, 9, generator=torch.Generator().manual_seed(2))
    corners = torch.tensor([[[0, 0], [7, 2], [3, 6], [8, 7]],
                            [[6, 4], [0, 8], [9, 0], [5, 5]]])
    got = crop_patches(images, corners, (4, 5)).numpy()
    for n in range(2):
        for k in range(4):
            ref = _official_crop(images[n].numpy(), tuple(corners[n, k].tolist()), (4, 5))
            np.testing.assert_array_equal(got[n, k], ref)
    assert got[0, 3, 0, 0] == images[0].min()  # past both edges: fill at the top-left


# ----------------------------------------------------------------------------- loading


class _CreatesFile:
    """Unpickling this would create the file named ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def default_model() -> GMIC:
    return _model(21)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, default_model) -> Path:
    """The weights as the official files hold them: torch.save of the state dict, in the
    legacy (pre-zip) serialisation."""
    path = tmp_path_factory.mktemp("official") / "sample_model_4.p"
    torch.save(default_model.state_dict(), path, _use_new_zipfile_serialization=False)
    return path


def _same_weights(a: GMIC, b: GMIC) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_saved_state_dict_loads_and_reproduces_outputs(tmp_path, default_model, official_file):
    x = _input(1, seed=22)
    loaded = load_gmic(official_file, top_t=0.02)  # the file name alone would give 0.05
    assert not loaded.training and loaded.config == default_model.config
    got, expected = loaded.run(x), default_model.run(x)
    for name in ("y_global", "y_local", "y_fusion", "saliency", "attention", "patch_locations"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    zipped = tmp_path / "weights.pth"
    torch.save(default_model.state_dict(), zipped)
    assert _same_weights(load_gmic(zipped), default_model)
    assert load_gmic(official_file).config.percent_t == 0.05  # sample_model_4 by its name
    assert load_gmic(zipped).config.percent_t == 0.02
    assert load_gmic(zipped, top_t=0.1).config.percent_t == 0.1


def test_project_checkpoint_keeps_its_configuration(tmp_path):
    model = _model(23, crop_shape=(128, 96), K=4, percent_t=0.05,
                   class_names=("benign", "malignant"))
    path = save_gmic(model, tmp_path / "gmic", info={"note": "test"})
    assert path.suffix == ".safetensors"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["format"] == "napari-correlax-gmic"
    assert sidecar["config"]["crop_shape"] == [128, 96] and sidecar["config"]["K"] == 4
    loaded = load_gmic(path)
    assert loaded.config == model.config
    x = _input(1, seed=24)
    np.testing.assert_array_equal(loaded.run(x).y_fusion, model.run(x).y_fusion)
    assert load_gmic(path, top_t=0.2).config.percent_t == 0.2


def test_missing_key_is_named(tmp_path, default_model):
    state = default_model.state_dict()
    del state["dn_resnet.layer3.1.bn2.running_var"]
    del state["ds_net.final_bn.num_batches_tracked"]  # counters may be absent
    path = tmp_path / "incomplete.p"
    torch.save(state, path)
    with pytest.raises(CorrelaxError) as err:
        load_gmic(path)
    text = str(err.value)
    assert "incomplete.p" in text and "missing keys: dn_resnet.layer3.1.bn2.running_var" in text
    assert "num_batches_tracked" not in text


def test_unexpected_key_and_wrong_shape_are_named(tmp_path, default_model):
    state = default_model.state_dict()
    state["fusion_network.weight"] = state.pop("fusion_dnn.weight")  # an older name
    state["mil_attn_w.weight"] = torch.zeros(1, 64)
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(CorrelaxError) as err:
        load_gmic(path)
    text = str(err.value)
    assert "renamed.pth" in text
    assert "missing keys: fusion_dnn.weight" in text
    assert "unexpected keys: fusion_network.weight" in text
    assert "mil_attn_w.weight (file (1, 64), model (1, 128))" in text


def test_weights_without_num_batches_tracked_still_load(tmp_path, default_model):
    state = {k: v for k, v in default_model.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    assert len(state) == 258 - 41
    path = tmp_path / "old.p"
    torch.save(state, path)
    assert _same_weights(load_gmic(path), default_model)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_holding_code_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.p"
    doc = {"ds_net.first_conv.weight": _CreatesFile(str(marker))}
    if writer == "torch.save":
        torch.save(doc, evil)
    else:
        evil.write_bytes(pickle.dumps(doc))
    with pytest.raises(CorrelaxError, match=r"evil\.p.*nothing in the file was run"):
        load_gmic(evil)
    assert not marker.exists()


def test_a_classifier_checkpoint_is_not_taken_for_gmic(tiny_checkpoint):
    with pytest.raises(CorrelaxError, match="classifier checkpoint, not a GMIC model"):
        load_gmic(tiny_checkpoint)


def test_cli_gmic_import_writes_a_checkpoint(tmp_path, official_file, default_model, capsys):
    out = tmp_path / "gmic.safetensors"
    assert main(["gmic", "import", str(official_file), "--top-t", "0.03",
                 "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    loaded = load_gmic(out)
    assert loaded.config.percent_t == 0.03
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["info"]["imported"]["file"] == "sample_model_4.p"
    assert len(meta["info"]["imported"]["sha256"]) == 64
    assert _same_weights(loaded, default_model)


def test_cli_gmic_import_error_is_one_line_with_exit_status_2(tmp_path, capsys):
    evil = tmp_path / "evil.p"
    torch.save({"x": _CreatesFile(str(tmp_path / "ran"))}, evil)
    assert main(["gmic", "import", str(evil), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evil.p" in err[0] and err[0].startswith("correlax gmic: error")
    assert not (tmp_path / "o.safetensors").exists() and not (tmp_path / "ran").exists()
    assert main(["gmic", "import", str(tmp_path / "absent.p"), "--out", "x",
                 "--top-t", "0.5"]) == 2
    assert "file not found" in capsys.readouterr().err


# ----------------------------------------------------------------------- preprocessing


def _breast(shape=(700, 420), seed=0, line=True) -> np.ndarray:
    """A left breast facing right (chest wall at column 0) on a 0 background, with a thin
    bright line in the background that the crop must ignore."""
    h, w = shape
    rr, cc = np.mgrid[:h, :w]
    inside = ((rr - h / 2) / (0.42 * h)) ** 2 + (cc / (0.8 * w)) ** 2 <= 1
    tissue = 0.3 + 0.5 * np.random.default_rng(seed).random(shape)
    image = np.where(inside, tissue, 0.0).astype(np.float32)
    if line:
        image[10:13, 360:415] = 1.0
    return image


SIZE = (512, 320)


def test_window_input_keeps_original_pixels_and_maps_back_exactly():
    image = _breast()
    for side, original in (("L", image), ("R", image[:, ::-1].copy())):
        prepared = gmic_input(original, side, size=SIZE, erosion=5)
        t = prepared.transform
        assert prepared.image.shape == SIZE and prepared.image.dtype == np.float32
        raw = prepared.image * prepared.std + prepared.mean  # undo the standardisation
        rows, cols = np.mgrid[:SIZE[0], :SIZE[1]]
        orow, ocol = t.to_original(rows, cols)
        inside = (orow >= 0) & (orow < original.shape[0]) & (ocol >= 0) & (ocol < original.shape[1])
        assert inside.mean() > 0.95
        expected = original[orow[inside].astype(int), ocol[inside].astype(int)]
        np.testing.assert_allclose(raw[inside], expected, atol=1e-5)
        back = t.to_input(orow, ocol)
        assert np.abs(back[0] - rows).max() < 1e-9 and np.abs(back[1] - cols).max() < 1e-9
        # the background line lies outside the crop, so it is not in the input
        assert raw.max() < 0.9


def test_right_breast_is_mirrored_to_face_right():
    image = _breast(seed=3)
    left = gmic_input(image, "L", size=SIZE, erosion=5)
    right = gmic_input(image[:, ::-1].copy(), "R", size=SIZE, erosion=5)
    np.testing.assert_array_equal(left.image, right.image)
    assert not left.transform.flipped and right.transform.flipped
    raw = left.image * left.std + left.mean
    assert raw[:, :40].mean() > raw[:, -40:].mean()  # chest wall (tissue) on the left


def test_cc_window_rows_hold_the_most_tissue():
    image = _breast((900, 300), seed=4, line=False)
    image[:200] = 0.0  # tissue only in the lower part
    prepared = gmic_input(image, "L", view="CC", size=(400, 256), erosion=5)
    t = prepared.transform
    top = int(t.start[0])
    left = int(t.start[1])
    counts = [(image[r:r + 400, left:left + 256] > 0).sum() for r in range(900 - 400 + 1)]
    assert (image[top:top + 400, left:left + 256] > 0).sum() == max(counts)


def test_resized_input_maps_a_spot_back_within_one_pixel():
    image = _breast((700, 420), seed=5, line=False)
    spot = (333, 141)
    image[spot[0] - 2:spot[0] + 3, spot[1] - 2:spot[1] + 3] = 5.0
    for side, original, col in (("L", image, spot[1]), ("R", image[:, ::-1].copy(),
                                                        419 - spot[1])):
        prepared = gmic_input(original, side, size=(256, 160), fit="resize", erosion=5)
        raw = prepared.image * prepared.std + prepared.mean
        weights = np.clip(raw - 1.0, 0, None)  # the spot only
        rows, cols = np.mgrid[:256, :160]
        centre = ((weights * rows).sum() / weights.sum(), (weights * cols).sum() / weights.sum())
        r, c = prepared.transform.to_original(*centre)
        assert abs(r - spot[0]) <= 1 and abs(c - col) <= 1
        back = prepared.transform.to_input(r, c)
        assert np.allclose(back, centre)


def test_maps_and_patch_boxes_warp_back_onto_the_original():
    original = _breast(seed=6)[:, ::-1].copy()
    prepared = gmic_input(Mammogram(original, None, {"laterality": "R", "view_position": "CC"}),
                          size=SIZE, erosion=5)
    t = prepared.transform
    # an input-resolution map of its own column index comes back as to_input's column
    cols_map = np.broadcast_to(np.arange(SIZE[1], dtype=np.float32), SIZE)
    warped = t.map_to_original(cols_map)
    rows, cols = np.mgrid[:original.shape[0], :original.shape[1]]
    in_r, in_c = t.to_input(rows, cols)
    inside = (in_r >= -0.5) & (in_r <= SIZE[0] - 0.5) & (in_c >= -0.5) & (in_c <= SIZE[1] - 0.5)
    assert np.isnan(warped[~inside]).all()
    np.testing.assert_allclose(warped[inside], np.clip(in_c[inside], 0, SIZE[1] - 1), atol=1e-3)
    # one saliency cell (8×5 grid: 64×64 input px) lands on its patch box
    grid = np.zeros((2, 8, 5), dtype=np.float32)
    grid[1, 2, 3] = 1.0
    warped = t.map_to_original(grid)
    assert warped.shape == (2, *original.shape)
    top, left, bottom, right = t.box_to_original([2 * 64, 3 * 64, 3 * 64, 4 * 64])
    peak = np.unravel_index(np.nanargmax(warped[1]), original.shape)
    assert top <= peak[0] < bottom and left <= peak[1] < right
    assert right - left == 64 and bottom - top == 64
    # the centre of the box is the mirrored centre of the cell
    r, c = t.to_original(2.5 * 64 - 0.5, 3.5 * 64 - 0.5)
    assert np.isclose((top + bottom) / 2 - 0.5, r) and np.isclose((left + right) / 2 - 0.5, c)


def test_standardisation_and_missing_laterality():
    image = _breast(seed=7)
    prepared = gmic_input(image, "l", size=SIZE, erosion=5)
    assert prepared.laterality == "L" and prepared.view == "CC"
    raw = prepared.image * prepared.std + prepared.mean
    np.testing.assert_allclose(prepared.image, (raw - raw.mean()) / raw.std(), atol=1e-4)
    assert prepared.tensor().shape == (1, 1, *SIZE)
    with pytest.raises(CorrelaxError, match="laterality unknown"):
        gmic_input(Mammogram(image, None, {"laterality": None}, path="x.dcm"), size=SIZE)


def test_the_training_cam_is_kept_with_the_checkpoint_and_used_by_default(tmp_path):
    model = _model(5, num_classes=1, class_names=("Mass",), input_size=SMALL, K=3,
                   crop_shape=(64, 64), train_cam="xgradcam")
    path = save_gmic(model, tmp_path / "xgrad.safetensors")
    loaded = load_gmic(path)
    assert loaded.config.train_cam == "xgradcam"
    x = torch.randn(1, 1, *SMALL)
    own, named, saliency = loaded.run(x), loaded.run(x, "xgradcam"), loaded.run(x, "cam")
    np.testing.assert_array_equal(own.patch_cells, named.patch_cells)
    np.testing.assert_array_equal(own.y_fusion, named.y_fusion)
    expected = _brute_force_distinct_windows(
        loaded(x.float(), "xgradcam").retrieval_map[0].numpy(), saliency.saliency[0],
        (1, 1), 3)
    assert [tuple(c) for c in own.patch_cells[0].tolist()] == expected


def test_a_checkpoint_saved_before_the_config_kept_the_cam_reads_it_from_its_training(
        tmp_path):
    from safetensors.torch import load_file, save_file

    model = _model(6, num_classes=1, class_names=("Mass",), input_size=SMALL, K=3,
                   crop_shape=(64, 64))
    path = save_gmic(model, tmp_path / "old.safetensors",
                     info={"training": {"train_cam": "layercam"}})
    from napari_correlax.models.checkpoint import META_KEY, read_header

    doc = read_header(path)
    doc["config"].pop("train_cam")
    save_file(load_file(path), str(path), metadata={META_KEY: json.dumps(doc)})
    assert "train_cam" not in read_header(path)["config"]
    assert load_gmic(path).config.train_cam == "layercam"
