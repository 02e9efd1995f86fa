"""First stage: the SD AutoencoderKL has the checkpoint's layout, encodes/decodes frame-wise with the scale factor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from curate.train.autoencoder import KLAutoencoder, PixelSpace, load_autoencoder

pytestmark = pytest.mark.usefixtures("one_thread")

LAYOUT = Path("/work/shared/reference/videocrafter2_checkpoint_layout.tsv")


def test_sd_vae_has_the_first_stage_layout():
    if not LAYOUT.exists():
        pytest.skip(f"reference layout {LAYOUT} not present")
    with torch.device("meta"):
        vae = KLAutoencoder()
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    ref = {}
    with open(LAYOUT) as f:
        for line in f:
            if line.startswith("first_stage_model."):
                key, shape, _ = line.rstrip("\n").split("\t")
                ref[key[len("first_stage_model."):]] = tuple(int(s) for s in shape.split("x"))
    assert ours == ref


def test_encode_decode_shapes_scale_and_frame_independence():
    torch.manual_seed(0)
    vae = KLAutoencoder(ch=32, ch_mult=(1, 2), num_res_blocks=1, scale_factor=0.5)
    x = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    z = vae.encode(x)
    assert z.shape == (2, 4, 3, 8, 8) and vae.downsample == 2
    frames = x.permute(0, 2, 1, 3, 4).reshape(6, 3, 16, 16)
    mean = vae.quant_conv(vae.encoder(frames)).chunk(2, dim=1)[0]
    assert torch.allclose(z.permute(0, 2, 1, 3, 4).reshape(6, 4, 8, 8), 0.5 * mean, atol=1e-5)
    assert torch.allclose(z[1, :, 2], vae.encode(x[1:2, :, 2:3])[0, :, 0], atol=1e-5)  # frames are independent
    assert vae.decode(z).shape == x.shape
    sampled = vae.encode(x, torch.Generator().manual_seed(0))
    assert not torch.equal(sampled, z) and torch.equal(sampled, vae.encode(x, torch.Generator().manual_seed(0)))


def test_pixel_space_is_identity_and_missing_vae_is_named():
    x = torch.randn(1, 3, 2, 4, 4)
    assert PixelSpace().decode(PixelSpace().encode(x)) is x
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_autoencoder("sd_kl", "missing.ckpt")
