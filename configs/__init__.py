"""ml_collections config files (``--config=configs/FILE.py[:ARG]``), importable as a package.

Each model's size presets (``tiny`` / ``small`` / ``release``) live in that model's file here; ``common`` holds
what every file shares. Library code that needs a preset imports it from here.
"""
