"""Route modules of this blueprint, imported once so they register on `bp`."""

from wallet.web.api import federation as _federation  # noqa: F401
from wallet.web.api import holds as _holds  # noqa: F401
from wallet.web.api import notes as _notes  # noqa: F401
from wallet.web.api import openapi as _openapi  # noqa: F401
from wallet.web.api import usage as _usage  # noqa: F401
