"""Files written by ``torch.save``, read with ``weights_only`` unless the user trusts them.

Every reader of a pickle-based file (a checkpoint, a Hugging Face ``pytorch_model.bin``) goes through
:func:`torch_load`, so a file that would run code is refused in one place, with one hint.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from trtinfer.errors import CheckpointError

TRUST_HINT = "loading it runs code stored in the file; if you trust its source, pass --trust-checkpoint"


def torch_load(path: Path, trust: bool) -> Any:
    """What ``torch.save`` wrote at ``path``, on the CPU; only tensors and plain containers unless ``trust``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{path} holds pickled Python objects beyond tensors{what}, e.g. a whole model saved with "
                f"torch.save(model)", hint=TRUST_HINT) from None
        detail = text.strip().splitlines()[-1][:120] if "Weights only" not in text.splitlines()[0] else "unreadable pickle"
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({detail})",
                              hint="pass a file written by torch.save") from None
    except (EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is truncated or corrupt ({type(exc).__name__})",
                              hint="copy or save the checkpoint again") from None
    except RuntimeError as exc:
        text = str(exc).splitlines()[0][:160]
        if "zip" in text.lower() or "archive" in text.lower() or "stream" in text.lower():
            raise CheckpointError(f"{path} is truncated or corrupt ({text})",
                                  hint="copy or save the checkpoint again") from None
        raise CheckpointError(f"{path} could not be loaded: {text}", hint="pass a file written by torch.save") from None
    except (ModuleNotFoundError, ImportError, AttributeError) as exc:
        raise CheckpointError(f"{path} refers to code that is not importable here ({str(exc)[:160]})",
                              hint="save model.state_dict() instead of the whole model") from None
    except Exception as exc:  # torch's unpicklers raise IndexError, KeyError... on arbitrary bytes
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]})",
                              hint="pass a file written by torch.save") from None
