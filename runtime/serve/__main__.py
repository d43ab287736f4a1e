"""``python -m runtime.serve MODEL.onnx [options]``."""

import sys

from runtime.serve.cli import main

sys.exit(main())
