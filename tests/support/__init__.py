"""What tests share: builders of tiny configs, stores, corpora, media and bundles, and fakes.

Test modules import from here, never from each other (tests/test_architecture.py).
"""
