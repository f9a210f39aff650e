"""`python -m gptbook.generate --ckpt checkpoints/ckpt.pt --prompt ...`: the command is in gptbook.cli."""

import sys

from gptbook.cli import generate_main

if __name__ == "__main__":
    sys.exit(generate_main())
