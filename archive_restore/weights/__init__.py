"""Model files: where the project's own networks are found (``folders``), and the third-party weights
the product can use, their manifest, download and verification (``downloads``)."""
