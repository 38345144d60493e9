"""The one part of the build pyproject.toml cannot declare stably (its ext-modules table is experimental): the
region decoder of camera frames, src/gatematch/_jpegregion.c. Optional, so an install without gcc or the headers
(C library, Python, libjpeg-turbo) still works; camera frames are then decoded whole."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("gatematch._jpegregion", ["src/gatematch/_jpegregion.c"], libraries=["jpeg"], optional=True)
    ]
)
