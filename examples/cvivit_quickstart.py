"""Train a tiny C-ViViT tokenizer on one synthetic clip for a few steps and report reconstruction error.

    python examples/cvivit_quickstart.py
"""

import torch

from phenaki_pytorch import CViViT

torch.manual_seed(0)

cvivit = CViViT(
    dim=64,
    codebook_size=512,
    image_size=32,
    patch_size=8,
    temporal_patch_size=2,
    spatial_depth=2,
    temporal_depth=2,
    dim_head=16,
    heads=4,
    use_gan=False,
)

# a bright square sliding right over 9 frames
video = torch.zeros(1, 3, 9, 32, 32)
for frame in range(9):
    video[:, 0, frame, 12:20, 2 + 2 * frame : 10 + 2 * frame] = 1.0

optimizer = torch.optim.Adam(cvivit.generator_parameters(), lr=2e-3)
for step in range(200):
    loss = cvivit(video)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    if step % 50 == 0:
        print(f"step {step:3d}  loss {loss.item():.4f}")

cvivit.eval()
ids = cvivit.tokenize(video)  # (1, 5, 4, 4) codebook ids
recon = cvivit.decode_from_codebook_indices(ids)
mse = torch.mean((recon - video) ** 2).item()
print(f"codebook ids {tuple(ids.shape)}, reconstruction MSE {mse:.4f}")
