"""Run by test_distributed.py, plain or under torchrun: train with a params file, rank 0 writes the result.

python tests/ddp_worker.py PARAMS TRAIN_CSV VAL_CSV OUT_PREFIX
"""

import json
import sys
from pathlib import Path

import torch

from aivsreal import distributed
from aivsreal.params import Params
from aivsreal.training import read_manifest, train

params_path, train_csv, val_csv, out = sys.argv[1:5]
params = Params.load(params_path)
context = distributed.setup("cpu")
try:
    result = train(params, read_manifest(train_csv), read_manifest(val_csv), context=context)
    if context.is_main:
        torch.save(result.model.state_dict(), f"{out}.pt")
        Path(f"{out}.json").write_text(json.dumps({"history": result.history, "world_size": context.world_size}))
finally:
    distributed.teardown(context)
