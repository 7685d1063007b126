"""Exceptions that reach the user as one-line messages."""


class PokedgeError(Exception):
    """An error the user can act on; its message says what failed and what to do."""


class InputError(PokedgeError):
    """An input image or frame that cannot be read or used."""


class ContractError(PokedgeError):
    """A model contract that is malformed or does not match its model."""


class GalleryError(PokedgeError):
    """A reference gallery that is malformed or does not match the model."""


class BackendError(PokedgeError):
    """An inference backend that cannot be opened or failed while running."""
