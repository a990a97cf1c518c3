"""SyncFarm core library: Ray-free stages over explicit inputs.

Everything here is a plain function or a small class that a test can call directly; `actors/`
wraps these stages for Ray, and `cli/` and `deploy/` only build a `JobSpec` and submit it.
"""

__version__ = "0.1.0"
