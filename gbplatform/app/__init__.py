"""The application shell: configuration, the command line, logging setup and ``make_service``."""
