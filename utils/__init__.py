"""Helpers of the pipeline. ``LOGGER`` is the project's one logger ("headzoo")."""
import logging

LOGGER = logging.getLogger("headzoo")
