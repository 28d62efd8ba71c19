"""Pure card renderers: domain objects in, Slack Block Kit (``slack``) or Adaptive Card 1.5 (``teams``) JSON out.

No I/O and no platform clients here; ``common`` holds what both renderers share, ``samples`` the fixed
notifications the golden tests and previews use.
"""
