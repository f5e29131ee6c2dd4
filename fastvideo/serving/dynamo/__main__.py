"""``python -m fastvideo.serving.dynamo``: run one FastVideo Dynamo worker (see ``main``)."""

import sys

from fastvideo.serving.dynamo.main import main

if __name__ == "__main__":
    sys.exit(main())
