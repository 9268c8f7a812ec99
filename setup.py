"""Only what setuptools cannot take from pyproject.toml: the cffi extension."""
from setuptools import setup

setup(cffi_modules=["mmap_lock_native/_build.py:ffibuilder"], zip_safe=False)
