"""What every backend shares: error translation, secret redaction, the thread bridge.

Each module here is small and knows no backend: a store package imports from here,
never from another store package.
"""
