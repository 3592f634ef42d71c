"""Training settings as data: the command lines of ``correlax train`` and ``correlax gmic
train`` are made from the settings classes and give them back (round trip), the defaults
are the recipes' (docs/method.md §5, §9), and the top-t pooling fraction has one name."""

from __future__ import annotations

import pytest

from napari_correlax.cli import build_parser
from napari_correlax.cli.options import settings_from_args
from napari_correlax.errors import CorrelaxError
from napari_correlax.gmic.config import (
    DEFAULT_TOP_T,
    GMICConfig,
    GMICTrainConfig,
    official_top_t,
)
from napari_correlax.train.settings import CropConfig, TrainConfig, command_line

CASES = [
    (TrainConfig, ["train"], TrainConfig(
        data="d", out="o", backbone="tiny", pretrained="w.pth", epochs=3, batch_size=5,
        lr=0.5, lr_min=0.25, input_size=64, seed=9, select="last", val_split="test",
        crop=CropConfig(window_share=0.5, window_negatives=4), cache="c", fresh=True,
        device="cpu", precision="bfloat16", workers=2, threads=1)),
    (GMICTrainConfig, ["gmic", "train"], GMICTrainConfig(
        data="d", out="o", train_cam="xgradcam", positive=["Mass", "Architectural Distortion"],
        negatives="all", init="sample_model_2.p", epochs=4, batch_size=2, lr=0.125, beta=0.5,
        reg="sum", input_size=(512, 320), fit="window", K=3, crop_shape=(64, 32), top_t=0.25,
        global_filters=8, global_stages=3, local_width=16, flip_p=0.0, crop_noise=0.0, seed=5,
        cache="c", fresh=True, device="cpu", workers=1, threads=2)),
]


def _parse(cls, action, argv):
    args = build_parser().parse_args([*action, *argv])
    return settings_from_args(cls, args, data=str(args.data), out=str(args.out))


@pytest.mark.parametrize(("cls", "action", "settings"), CASES)
def test_command_line_and_settings_round_trip(cls, action, settings):
    """Settings → command line → parsed settings gives the same settings; every option
    differs from its default here, so every option is exercised."""
    argv = command_line(settings)
    assert _parse(cls, action, argv) == settings
    # and the defaults: no option gives the class's defaults, and writes none
    assert _parse(cls, action, ["d", "--out", "o"]) == cls(data="d", out="o")
    assert command_line(cls(data="d", out="o")) == ["d", "--out", "o"]


def test_the_recipes_defaults_reach_the_command_lines(capsys):
    """The paper's recipe (batch 48, 50 epochs, efficientnet_v2_s) and CAM-GMIC's (batch 6,
    50 epochs, GMIC's own CAM), written out here by hand."""
    cls = _parse(TrainConfig, ["train"], ["d", "--out", "o"])
    assert (cls.batch_size, cls.epochs, cls.backbone, cls.select) == (
        48, 50, "efficientnet_v2_s", "best")
    gmic = _parse(GMICTrainConfig, ["gmic", "train"], ["d", "--out", "o"])
    assert (gmic.batch_size, gmic.epochs, gmic.train_cam, gmic.top_t) == (6, 50, "cam", None)
    assert (gmic.input_size, gmic.crop_shape, gmic.K) == ((2944, 1920), (256, 256), 6)
    for action, batch in ((["train"], 48), (["gmic", "train"], 6)):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*action, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert f"over processes (default {batch})" in shown


def test_settings_refuse_what_cannot_work():
    with pytest.raises(CorrelaxError, match="not both"):
        TrainConfig(data="d", out="o", val_split="test", val_fraction=0.2)
    with pytest.raises(CorrelaxError, match="window share"):
        CropConfig(window_share=1.5)
    with pytest.raises(CorrelaxError, match="patch size"):
        GMICTrainConfig(data="d", out="o", input_size=(128, 128), crop_shape=(256, 256))
    with pytest.raises(CorrelaxError, match="unknown CAM"):
        GMICTrainConfig(data="d", out="o", train_cam="eigencam")


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        TrainConfig(data="d", out="o").batch_size = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        GMICTrainConfig(data="d", out="o").batch_size = 1  # type: ignore[misc]


def test_top_t_is_the_official_percent_t():
    # GMIC's official table: sample_model_1 … 5 pool the top 2, 3, 3, 5 and 10 %
    assert [official_top_t(f"sample_model_{i}")[0] for i in range(1, 6)] == [
        0.02, 0.03, 0.03, 0.05, 0.1]
    assert official_top_t("my_gmic") == (0.02, "default (model 1)")
    assert DEFAULT_TOP_T == 0.02
    config = GMICConfig(percent_t=0.05)
    assert config.top_t == 0.05 and GMICConfig().top_t == 0.02
    assert GMICTrainConfig(data="d", out="o", top_t=0.05).model_config(0.05).percent_t == 0.05
