"""`python -m pipeline.model.check_folder <folder> <preset>`: what keeps a model folder from loading, as JSON.

The driver's pre-flight runs this in a subprocess, so that checking a run's weights (tensor names and
shapes from the files' headers, no tensor data read) never loads torch into the driver itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.model.bundle import folder_problems
from pipeline.spec.model import get_preset


def main(argv: list[str]) -> int:
    folder, preset = argv
    print(json.dumps(folder_problems(get_preset(preset), Path(folder))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
