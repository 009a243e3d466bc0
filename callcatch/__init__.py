"""callcatch: catch every missed call on a shop's Asterisk and text the caller back."""

__version__ = "0.1.0"
