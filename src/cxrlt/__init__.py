"""cxrlt: multi-label, long-tailed disease recognition on chest X-rays."""

__version__ = "0.1.0"
