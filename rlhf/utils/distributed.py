"""Process-group environment for single-process DeepSpeed / torch.distributed runs."""

from __future__ import annotations

import os
import socket

__all__ = ["ensure_single_process_env", "free_port"]


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_single_process_env() -> None:
    """Set RANK/WORLD_SIZE/MASTER_* for a one-process group unless a launcher already did.

    DeepSpeed asks for mpi4py without them; with them it picks gloo on CPU. Communication ops it compiles
    are cached under ``TORCH_EXTENSIONS_DIR`` (default: the project cache) so only the first run pays.
    """
    defaults = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                "MASTER_ADDR": "127.0.0.1"}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    from rlhf.core.paths import share_torch_extensions

    share_torch_extensions()
