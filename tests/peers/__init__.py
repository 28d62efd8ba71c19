"""Fake receivers on loopback that record exactly what they got: import them, no conftest needed.

from tests.peers.http_sink import HttpSink, Reply
from tests.peers.smtp_sink import SmtpSink
"""
