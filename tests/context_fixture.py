"""A small workspace on disk for repository-context tests, with traps for the reader.

``app/main.py`` is being edited: its last line types ``compute_invoice_total(``.
``app/billing/helpers.py`` defines that function; ``app/reports.py`` shares a few
words with the cursor's code but not the function.  Every trap below contains the
cursor's identifiers (so it would rank high if it were read) and the marker
``LEAKED``: none may ever reach a prompt.
"""

from __future__ import annotations

import os
from pathlib import Path

MAIN_PREFIX = (
    "from app.billing.helpers import compute_invoice_total\n"
    "\n"
    "\n"
    "def checkout(cart, customer):\n"
    "    items = cart.items\n"
    "    total = compute_invoice_total("
)
MAIN_SUFFIX = ")\n    return total\n"

HELPERS = '''"""Money helpers."""


def compute_invoice_total(items, tax_rate):
    """Sum of the line items with tax, rounded to cents."""
    subtotal = sum(item.price * item.quantity for item in items)
    return round(subtotal * (1 + tax_rate), 2)
'''

REPORTS = '''def monthly_report(customer, orders):
    lines = [f"{order.id}: {order.amount}" for order in orders]
    return "\\n".join([customer.name, *lines])
'''

# The cursor's identifiers, so that a trap would win the ranking if it were read.
BAIT = "compute_invoice_total checkout cart customer items total LEAKED\n"


def make_workspace(root: Path) -> Path:
    """Write the workspace under ``root/ws`` (and an outside folder) and return the workspace."""
    ws = root / "ws"
    outside = root / "outside"
    (ws / "app" / "billing").mkdir(parents=True)
    (ws / "config").mkdir()
    (ws / "generated").mkdir()
    outside.mkdir()
    (ws / "app" / "main.py").write_text(MAIN_PREFIX + MAIN_SUFFIX)
    (ws / "app" / "billing" / "__init__.py").write_text("")
    (ws / "app" / "billing" / "helpers.py").write_text(HELPERS)
    (ws / "app" / "reports.py").write_text(REPORTS)

    (ws / ".gitignore").write_text("generated/\n*.log\n")
    (ws / "generated" / "invoice_cache.py").write_text(BAIT)
    (ws / "app" / "debug.log").write_text(BAIT)
    (ws / ".env").write_text("API_KEY=" + BAIT)
    (ws / "app" / ".env.production").write_text(BAIT)
    (ws / "config" / "credentials.json").write_text('{"k": "%s"}' % BAIT.strip())
    (ws / "config" / "server.pem").write_text(BAIT)
    (ws / "id_rsa").write_text(BAIT)
    (ws / "app" / "blob.py").write_bytes(BAIT.encode() + b"\0\1\2" + BAIT.encode())
    (ws / "app" / "huge.py").write_text(BAIT * (1_100_000 // len(BAIT)))
    (outside / "secret.py").write_text(BAIT)
    os.symlink(outside / "secret.py", ws / "app" / "linked.py")
    os.symlink(outside, ws / "app" / "linked_dir")
    return ws
