"""One module per process kind of the development stack (see :mod:`devstack.stack`)."""
