"""The one output writer every command uses (ONNX, engines + manifests, reports, demo images and meshes, kernels).

- `check_output_path` / `check_output_dir` (`checks`): the destination is checked before any work (parent exists
  and is a writable directory, the target is not a directory, an existing file needs `force`).
- `outputs(...)` (`transaction`): claims the destinations for the whole command with an exclusive lock file
  `.NAME.lock` (`claims`), so two concurrent writers of one name cannot both succeed: the second gets "another
  process is writing NAME" before it starts. Everything written inside the block is one transaction: on an error
  or Ctrl-C every file it wrote is removed (or, under `force`, the previous file put back), so multi-file outputs
  (ONNX + fidelity, engine + manifest + layers, PNG + OBJ + PLY) are kept together or not at all.
- `atomic_path` / `write_bytes_atomic` / `write_text_atomic` (`atomic`): each file is written to an exclusive temp
  file beside it and renamed into place only when complete, into the `outputs` transaction open in this thread
  (joined implicitly; why, at the top of `atomic`).
- `staged_dir` / `check_output_tree` (`staging`): a directory output written as a whole and renamed into place.

Callers import from `smpler_deploy.fileio`, this package's entry point; the modules are split by job.
"""

from .atomic import atomic_path, sha256_file, write_bytes_atomic, write_text_atomic
from .checks import check_output_dir, check_output_path
from .staging import check_output_tree, stage_dir, staged_dir
from .transaction import interrupted_message, os_error_message, outputs

__all__ = ["atomic_path", "check_output_dir", "check_output_path", "check_output_tree", "interrupted_message",
           "os_error_message", "outputs", "sha256_file", "stage_dir", "staged_dir", "write_bytes_atomic",
           "write_text_atomic"]
