"""The application shell: configuration, the command line, logging setup, the typed ``AppContext`` and ``make_service``."""
