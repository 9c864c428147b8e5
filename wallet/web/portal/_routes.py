"""Route modules of this blueprint, imported once so they register on `bp`."""
from wallet.web.portal import bring as _bring  # noqa: F401
from wallet.web.portal import notes as _notes  # noqa: F401
from wallet.web.portal import transactions as _transactions  # noqa: F401
