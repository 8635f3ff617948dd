import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "0")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
