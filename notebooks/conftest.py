"""nbval compares figures too: a notebook's committed PNGs must be the ones a fresh run draws.

nbval leaves image/png out of its comparison by default. With it in, the committed outputs are exactly what
the current code prints and draws, so the book can show them without executing the notebooks a second time.
"""


def pytest_collection_modifyitems(items):
    for item in items:
        skip = getattr(item.parent, "skip_compare", None)  # nbval's notebook collector
        if skip is not None:
            item.parent.skip_compare = tuple(k for k in skip if k != "image/png")
