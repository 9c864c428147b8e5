"""Route modules of this blueprint, imported once so they register on `bp`."""
from wallet.web.admin import federation as _federation  # noqa: F401
from wallet.web.admin import grants as _grants  # noqa: F401
from wallet.web.admin import issued as _issued  # noqa: F401
from wallet.web.admin import keys as _keys  # noqa: F401
from wallet.web.admin import people_actions as _people_actions  # noqa: F401
from wallet.web.admin import prices as _prices  # noqa: F401
