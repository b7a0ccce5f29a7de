# A shim for stdeb, which still drives setup.py; the metadata is in pyproject.toml.
# stdeb reads the Homepage from the legacy `url` field, so it is repeated here.
from setuptools import setup

setup(url="https://github.com/theia-black/theiaos")
