"""xc-harness: benchmark suite and leaderboard harness for machine-learned XC functionals."""

__version__ = "0.1.0"

#: Version of the evaluation protocol (docs/protocol.md) that results are scored under.
PROTOCOL_VERSION = 1
